"""Rollout throughput: the same prompts and sampling on the hf and vllm backends, in one run.

    .venv/bin/python bench/rollout.py [--models demo,25m,125m] [--prompts 16] [--n 8] [--max-new-tokens 128]

For each model (the committed demo base model, and random Qwen2 models of about 25M and 125M
parameters built here), prints the start-up time of each backend (loading the model; for vllm,
building the engine and syncing the policy's weights into it), the generated tokens per second of
each (best of --repeats timed calls after one warm-up call), and their ratio. The random models
rarely emit eos, so their responses run to --max-new-tokens; both backends sample the same number
of sequences from the same prompts at the same temperature.

On a CUDA machine it also times vLLM's own offline `LLM.generate` on the same prompts and engine
(the target: the backend inside a training step reaches at least 80% of it). Prints figures;
asserts nothing.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from prorl_engine.backends import make_backend  # noqa: E402
from prorl_engine.modeling import load_policy, load_tokenizer  # noqa: E402
from prorl_engine.prompts import encode_prompt  # noqa: E402
from prorl_engine.rollout import SamplingParams  # noqa: E402
from prorl_engine.tiny import build_tiny_model  # noqa: E402

RANDOM_MODELS = {"25m": {"hidden_size": 512, "num_layers": 6, "num_heads": 8}}
RANDOM_MODELS["125m"] = {"hidden_size": 768, "num_layers": 12, "num_heads": 12}


def model_folder(name: str, scratch: Path) -> Path:
    if name == "demo":
        return ROOT / "prorl_engine" / "configs" / "demo-base"
    demo_tokenizer = load_tokenizer(ROOT / "prorl_engine" / "configs" / "demo-base")
    return build_tiny_model(scratch / name, tokenizer=demo_tokenizer, max_positions=1024, **RANDOM_MODELS[name])


def timed_generate(backend, prompts, params, repeats: int) -> tuple[float, int]:
    """Best tokens/s of `repeats` calls after a warm-up call, and the tokens of one call."""
    backend.generate(prompts, params)
    best, tokens = 0.0, 0
    for repeat in range(repeats):
        torch.manual_seed(repeat)
        start = time.perf_counter()
        generations = backend.generate(prompts, params)
        seconds = time.perf_counter() - start
        tokens = sum(len(g.token_ids) for g in generations)
        best = max(best, tokens / seconds)
    return best, tokens


def offline_vllm(backend, prompts, params, repeats: int) -> float:
    """vLLM's own `LLM.generate` on the backend's engine, the same requests: tokens/s."""
    from vllm import SamplingParams as VLLMSamplingParams
    from vllm.inputs import TokensPrompt

    request = VLLMSamplingParams(
        n=params.n, temperature=params.temperature, top_p=params.top_p, max_tokens=params.max_new_tokens, seed=0
    )
    inputs = [TokensPrompt(prompt_token_ids=p) for p in prompts]
    backend.llm.generate(inputs, request, use_tqdm=False)
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        outputs = backend.llm.generate(inputs, request, use_tqdm=False)
        tokens = sum(len(s.token_ids) for o in outputs for s in o.outputs)
        best = max(best, tokens / (time.perf_counter() - start))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="demo,25m,125m")
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--n", type=int, default=8, help="samples per prompt")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--temperature", type=float, default=1.2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--dtype", default="float32")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    params = SamplingParams(args.n, args.max_new_tokens, args.temperature, 1.0)
    batch = args.prompts * args.n
    print(
        f"device {device}, torch threads {args.threads}, {args.prompts} prompts x {args.n} samples, "
        f"up to {args.max_new_tokens} new tokens, temperature {args.temperature}, {args.dtype}"
    )

    with tempfile.TemporaryDirectory() as scratch:
        for name in args.models.split(","):
            folder = model_folder(name, Path(scratch))
            tokenizer = load_tokenizer(folder)
            prompts = [
                encode_prompt(tokenizer, f"What is {i} + {3 * i + 1}? Show your steps.") for i in range(args.prompts)
            ]
            start = time.perf_counter()
            policy = load_policy(folder, args.dtype, device)
            loaded_s = time.perf_counter() - start
            millions = sum(p.numel() for p in policy.parameters()) / 1e6
            figures = {}
            for backend_name in ("hf", "vllm"):
                start = time.perf_counter()
                backend = make_backend(
                    backend_name,
                    policy,
                    tokenizer,
                    folder,
                    batch_size=batch,
                    dtype=args.dtype,
                    max_model_len=max(map(len, prompts)) + args.max_new_tokens,
                )
                startup_s = loaded_s + time.perf_counter() - start
                tokens_per_s, tokens = timed_generate(backend, prompts, params, args.repeats)
                figures[backend_name] = tokens_per_s
                print(
                    f"{name:>5} ({millions:6.1f}M) {backend_name:>4}: start-up {startup_s:6.2f} s, "
                    f"{tokens_per_s:8.1f} generated tokens/s ({tokens} tokens per call)"
                )
                if backend_name == "vllm" and torch.cuda.is_available():
                    offline = offline_vllm(backend, prompts, params, args.repeats)
                    print(
                        f"{name:>5} vLLM offline LLM.generate: {offline:8.1f} tokens/s; "
                        f"the backend reaches {tokens_per_s / offline:.0%} of it"
                    )
            print(f"{name:>5} vllm / hf: {figures['vllm'] / figures['hf']:.2f}x")
            del policy


if __name__ == "__main__":
    main()
