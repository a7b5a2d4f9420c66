"""Training data: the `Example` record, data sources and weighted mixes."""

from prorl_engine.data.example import DOMAINS, Example

__all__ = ["DOMAINS", "Example"]
