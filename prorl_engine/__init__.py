"""ProRL engine: prolonged RL for LLMs with the ProRL v2 recipe (see PRORL_SPEC.md).

A plain Python + PyTorch library. It imports nothing from django, celery, channels or redis.
"""

__version__ = "0.1.0"
