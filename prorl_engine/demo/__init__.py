"""The demo's base model, built on the engine (the engine core imports nothing from here).

- `problems`: the three reasoning-gym arithmetic tasks, their worked and guessed solutions, and
  the demo run's data mix and held-out split;
- `sft`: the tokenizer, the SFT pairs and the supervised fine-tuning loop;
- `build`: `build_base_model` (a cached, seeded build into a `save_pretrained` folder), its
  held-out evaluation and the command (`prorl base-model`, `python -m prorl_engine.demo`).

`model_path: base:<folder>` builds this model in <folder> on first use. The seed-0 build is
committed in prorl_engine/configs/demo-base; configs/demo.yaml trains on it.
"""
