"""Path policies: a run validated for someone else reads and builds only where that person may,
and hears the same thing about a forbidden path as about a missing one; a terminal is unrestricted."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from prorl_engine.builders import MODEL_BUILDERS
from prorl_engine.config import ConfigError, RunConfig
from prorl_engine.paths import DATA_REFUSED, MODEL_REFUSED, PathPolicy

REPO = Path(__file__).resolve().parents[2]
RECORD = {"prompt": "What is 2 + 2?", "answer": "4"}


def model_folder(folder: Path, window: int = 512) -> Path:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"model_type": "qwen2", "max_position_embeddings": window}))
    return folder


def data_file(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(RECORD) + "\n")
    return path


@pytest.fixture
def server(tmp_path) -> dict[str, Path]:
    """A studio's machine: the project, an open model root and data root, and Alice's files elsewhere."""
    return {
        "project": (tmp_path / "project").resolve(),
        "shared_model": model_folder(tmp_path / "models" / "shared"),
        "shared_data": data_file(tmp_path / "data" / "math.jsonl"),
        "alices_checkpoint": model_folder(tmp_path / "runs" / "1" / "checkpoints" / "step-000004"),
        "secret": data_file(tmp_path / "home" / "alice" / "secret.jsonl"),
        "tmp": tmp_path,
    }


@pytest.fixture
def policy(server) -> PathPolicy:
    """Bob's rules: the open roots, builds under the project's var/models, nothing granted."""
    tmp = server["tmp"]
    return PathPolicy(
        base_dir=server["project"],
        build_root=server["project"] / "var" / "models",
        model_roots=(tmp / "models",),
        data_roots=(tmp / "data",),
    )


def config(**changes) -> dict:
    values = {
        "model_path": "tiny:var/models/tiny",
        "steps": 4,
        "prompts_per_step": 2,
        "samples_per_prompt": 2,
        "max_prompt_tokens": 64,
        "max_response_tokens": 16,
        "updates_per_step": 2,
        "data": [{"task": "chain_sum", "size": 8, "eval_size": 2}],
    }
    return {**values, **changes}


def errors_of(values: dict, **kwargs) -> dict[str, str]:
    with pytest.raises(ConfigError) as caught:
        RunConfig.from_dict(values, **kwargs)
    return dict(caught.value.errors)


def file_source(path: str) -> list[dict]:
    return [{"task": "mine", "source": "file", "path": path, "domain": "math"}]


def test_bob_cannot_train_from_alices_checkpoint_and_hears_what_he_hears_for_a_missing_folder(server, policy):
    refused = errors_of(config(model_path=str(server["alices_checkpoint"])), path_policy=policy)
    missing = errors_of(config(model_path=str(server["tmp"] / "models" / "no-such-model")), path_policy=policy)
    nowhere = errors_of(config(model_path="/no/such/folder"), path_policy=policy)
    assert refused == missing == nowhere == {"model_path": MODEL_REFUSED}


def test_a_folder_under_a_model_root_is_used_and_its_context_window_still_checked(server, policy):
    assert RunConfig.from_dict(config(model_path=str(server["shared_model"])), path_policy=policy)
    # 64 prompt + 500 response tokens do not fit the shared model's 512 positions.
    errors = errors_of(config(model_path=str(server["shared_model"]), max_response_tokens=500), path_policy=policy)
    assert "564" in errors["max_response_tokens"] and "512" in errors["max_response_tokens"]


def test_a_folder_the_caller_grants_is_used(server, policy):
    granted = dataclasses.replace(policy, grants_model=lambda folder: folder == server["alices_checkpoint"])
    assert RunConfig.from_dict(config(model_path=str(server["alices_checkpoint"])), path_policy=granted)


@pytest.mark.parametrize(
    "model_path",
    [
        "/etc/passwd",
        "models/../runs/1/checkpoints/step-000004",
        "models/shared/../shared",
    ],
)
def test_escapes_are_refused_like_a_missing_folder(server, policy, model_path):
    local = dataclasses.replace(policy, base_dir=server["tmp"])  # "models/shared" is a real root
    assert RunConfig.from_dict(config(model_path="models/shared"), path_policy=local)
    assert errors_of(config(model_path=model_path), path_policy=local) == {"model_path": MODEL_REFUSED}


def test_a_nul_byte_names_nothing_a_policy_allows(server, policy):
    local = dataclasses.replace(policy, base_dir=server["tmp"])
    assert local.locate_model("models/shared", ()) is not None and local.locate_model("models/shared\0", ()) is None
    assert local.locate_model("tiny:x\0y", MODEL_BUILDERS) is None
    assert local.locate_data("data/math.jsonl") is not None and local.locate_data("data/math.jsonl\0") is None


@pytest.mark.parametrize(
    "model_path",
    ["tiny:/tmp/anywhere", "tiny:", "tiny:.", "tiny:../outside", "tiny:var/models/../../outside", "base:/etc/prorl"],
)
def test_a_builder_may_not_write_outside_the_build_root(server, policy, model_path):
    assert errors_of(config(model_path=model_path), path_policy=policy) == {"model_path": MODEL_REFUSED}
    assert errors_of(config(model_path="/no/such/folder"), path_policy=policy) == {"model_path": MODEL_REFUSED}


def test_builder_folder_names_resolve_inside_the_build_root_whatever_the_working_directory(server, policy, monkeypatch):
    monkeypatch.chdir(server["tmp"])
    build_root = server["project"] / "var" / "models"
    as_at_a_terminal = policy.locate_model("tiny:var/models/tiny-qwen2", MODEL_BUILDERS)
    assert (as_at_a_terminal.folder, as_at_a_terminal.builder) == (build_root / "tiny-qwen2", "tiny")
    bare_name = policy.locate_model("base:my-base", MODEL_BUILDERS)
    assert bare_name.model_path == f"base:{build_root / 'my-base'}"
    # Another var folder than the project's: the name still lands inside the build root.
    elsewhere = dataclasses.replace(policy, build_root=server["tmp"] / "var2" / "models")
    located = elsewhere.locate_model("tiny:var/models/t", MODEL_BUILDERS)
    assert located.folder == server["tmp"] / "var2" / "models" / "var" / "models" / "t"


def test_a_built_model_under_a_read_only_root_is_used_as_it_is_never_rebuilt_there(server, policy):
    local = dataclasses.replace(policy, base_dir=server["tmp"])
    located = local.locate_model("base:models/shared", MODEL_BUILDERS)
    assert (located.folder, located.builder) == (server["shared_model"], None)  # plain: no builder writes there


def test_the_committed_demo_model_stays_usable_read_only():
    policy = PathPolicy(
        base_dir=REPO,
        build_root=REPO / "var" / "models",
        model_roots=(REPO / "prorl_engine" / "configs" / "demo-base",),
    )
    demo = RunConfig.load(REPO / "prorl_engine" / "configs" / "demo.yaml", path_policy=policy)
    resolved = policy.resolve(demo, MODEL_BUILDERS)
    assert resolved.model_path == str(REPO / "prorl_engine" / "configs" / "demo-base")


def test_bob_cannot_read_a_server_file_as_data_and_hears_what_he_hears_for_a_missing_file(server, policy):
    refused = errors_of(config(data=file_source(str(server["secret"]))), path_policy=policy)
    missing = errors_of(config(data=file_source(str(server["tmp"] / "data" / "none.jsonl"))), path_policy=policy)
    assert refused == missing == {"data[0]": DATA_REFUSED}
    assert RunConfig.from_dict(config(data=file_source(str(server["shared_data"]))), path_policy=policy)


def test_the_worker_config_has_absolute_paths_read_from_the_project_not_the_working_directory(
    server, policy, monkeypatch
):
    data_file(server["project"] / "data" / "mine.jsonl")
    local = dataclasses.replace(policy, data_roots=(server["project"] / "data",))
    monkeypatch.chdir(server["tmp"])
    checked = RunConfig.from_dict(config(data=file_source("data/mine.jsonl")), path_policy=local)
    resolved = local.resolve(checked, MODEL_BUILDERS)
    assert resolved.model_path == f"tiny:{server['project'] / 'var' / 'models' / 'tiny'}"
    assert resolved.data[0].path == str(server["project"] / "data" / "mine.jsonl")
    with pytest.raises(ValueError, match="no data file you may use"):
        local.resolve(RunConfig.from_dict(config(data=file_source(str(server["secret"])))), MODEL_BUILDERS)


def test_a_web_host_without_the_files_trusts_permitted_paths_and_still_refuses_the_rest(server, policy):
    trusting = dataclasses.replace(policy, check_disk=False)
    only_on_workers = config(
        model_path=str(server["tmp"] / "models" / "on-the-gpu-box"),
        data=file_source(str(server["tmp"] / "data" / "on-the-gpu-box.jsonl")),
    )
    assert RunConfig.from_dict(only_on_workers, path_policy=trusting)
    assert errors_of(only_on_workers, path_policy=policy).keys() == {"model_path", "data[0]"}
    assert errors_of(config(model_path=str(server["alices_checkpoint"])), path_policy=trusting) == {
        "model_path": MODEL_REFUSED
    }
    # check_paths=False (the preview) keeps the rules and skips the disk, as check_disk=False does.
    assert RunConfig.from_dict(only_on_workers, check_paths=False, path_policy=policy)


def test_a_person_at_a_terminal_may_name_any_folder_file_or_build_target(server):
    anywhere = config(model_path=str(server["alices_checkpoint"]), data=file_source(str(server["secret"])))
    assert RunConfig.from_dict(anywhere).model_path == str(server["alices_checkpoint"])
    assert RunConfig.from_dict(config(model_path=f"tiny:{server['tmp'] / 'built'}")).model_path.startswith("tiny:")
    assert "does not exist" in errors_of(config(data=file_source(str(server["tmp"] / "none.jsonl"))))["data[0]"]


def test_a_policy_needs_absolute_folders():
    with pytest.raises(ValueError, match="base_dir"):
        PathPolicy(base_dir=Path("relative"), build_root=Path("/var/models"))
    with pytest.raises(ValueError, match="roots"):
        PathPolicy(base_dir=Path("/srv"), build_root=Path("/var/models"), data_roots=(Path("data"),))


def test_a_bare_builder_is_refused_at_a_terminal_too_rather_than_building_in_the_working_directory():
    assert "tiny:<folder>" in errors_of(config(model_path="tiny:"))["model_path"]
