"""Each image's requirements file installs into a fresh virtualenv, and the image's code runs with it.

This is what ``docker build`` would find out about missing or conflicting packages, without Docker:
the venvs hold exactly docker/<image>/requirements.txt (built in parallel by the ``image_venvs``
fixture) and the repository on PYTHONPATH, as the image holds the installed ``tasks`` package.
"""

from __future__ import annotations

import ast
import json
import sys
import warnings
from pathlib import Path

import pytest

from tests.helpers.deploy_files import REPO, trainer_pending
from tests.helpers.image_venvs import run_in

# Libraries the DAG files must not import at module level (they slow every parse; some are absent here).
HEAVY_AT_PARSE = ["torch", "transformers", "peft", "great_expectations", "mlflow", "PIL", "pandas", "tweepy"]
# Reached from the DAGs' task code but deliberately not in the Airflow image: they belong to code that runs
# in the trainer image (tasks.train.job via the DockerOperator) or scores models (tasks.model.detector and
# the probe's ONNX backbone, tasks.evaluate for the promotion gate, a monitoring reference). Every other
# library the task code imports must be in the image.
MODEL_SIDE = {
    "onnx",
    "onnxruntime",
    "torch",
    "transformers",
    "peft",
    "tokenizers",
    "huggingface_hub",
    "accelerate",
    "sklearn",
    "matplotlib",
    "psutil",
}
SERVING_IMPORTS = [
    "tasks.settings",
    "tasks.storage",
    "tasks.images",
    "fastapi",
    "fastapi_offline",  # /docs and /redoc assets
    "uvicorn",
    "multipart",
    "prometheus_client",
    "torch",
    "transformers",
    "peft",
    "mlflow.pyfunc",
    "pandas",
    "PIL",
    "boto3",
    "s3fs",
]


def entry_point_or_fallback(module: str, fallback: list[str]) -> list[str]:
    """The image's entry-point module when it exists; until then, what it will import (and a warning)."""
    if (REPO / "tasks" / f"{module}.py").exists() or (REPO / "tasks" / module / "__init__.py").exists():
        return [f"tasks.{module}", *fallback]
    warnings.warn(f"tasks.{module} does not exist yet: checked {', '.join(fallback)} instead", stacklevel=2)
    return fallback


def imports_code(modules: list[str]) -> str:
    return (
        "import importlib\n"
        + "".join(f"importlib.import_module({m!r})\n" for m in modules)
        + "print('imported')\n"
    )


def _imports(path: Path) -> set[str]:
    """Every absolute import in a file, at any depth (task bodies import lazily)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found |= {node.module, *(f"{node.module}.{alias.name}" for alias in node.names)}
    return found


def task_code_of_the_dags() -> tuple[list[str], list[str]]:
    """(Vigil modules, third-party top-level modules) the DAG files reach through Vigil's code, imported
    anywhere in a function or at module level. What the workers import when they run the tasks."""
    vigil, third_party = set(), set()
    todo = [name for path in (REPO / "dags").glob("*.py") for name in _imports(path)]
    while todo:
        name = todo.pop()
        top = name.split(".")[0]
        if top == "tasks":
            base = REPO.joinpath(*name.split("."))
            path = next((p for p in (base.with_suffix(".py"), base / "__init__.py") if p.is_file()), None)
            if path and name not in vigil:
                vigil.add(name)
                todo += _imports(path)
        elif top not in sys.stdlib_module_names and top not in {"airflow", "vigil_common", "__future__"}:
            third_party.add(top)
    return sorted(vigil), sorted(third_party)


DAGBAG_CHECK = """
import importlib, json, sys, tempfile
from pathlib import Path
from airflow.dag_processing.dagbag import BundleDagBag, DagBag
DagBag(tempfile.mkdtemp())  # what Airflow itself loads to parse, before any DAG file
before = set(sys.modules)
# As the DAG processor parses the dags-folder bundle: the folder is on sys.path (vigil_common imports).
bag = BundleDagBag(dag_folder="dags", bundle_path=Path("dags").resolve())
heavy = sorted(m for m in {heavy!r} if m in sys.modules and m not in before)
stats = sorted(s.file.lstrip("/") for s in bag.dagbag_stats)
missing, model_side = {{}}, {{}}
for module in {modules!r}:
    try:
        importlib.import_module(module)
    except ModuleNotFoundError as exc:
        top = (exc.name or "").split(".")[0]
        (model_side if top in {model_side!r} else missing)[module] = str(exc)
print("RESULT " + json.dumps({{"dags": sorted(bag.dag_ids), "errors": {{k: str(v) for k, v in bag.import_errors.items()}},
                              "heavy": heavy, "files": stats, "missing": missing, "model_side": model_side}}))
"""


def test_airflow_image_parses_the_dags_and_imports_the_task_code(image_venvs, tmp_path):
    python = image_venvs.python("airflow")
    env = {
        "AIRFLOW_HOME": str(tmp_path),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "GX_ANALYTICS_ENABLED": "false",
    }
    vigil, third_party = task_code_of_the_dags()
    assert {"tasks.collect.run", "tasks.curate.pipeline", "tasks.train.launch", "tasks.promote.gate"} <= set(
        vigil
    )
    assert {"great_expectations", "isal", "tweepy", "docker"} <= set(third_party)
    modules = [*vigil, *(m for m in third_party if m not in MODEL_SIDE)]
    out = run_in(
        python, DAGBAG_CHECK.format(heavy=HEAVY_AT_PARSE, modules=modules, model_side=MODEL_SIDE), env=env
    )
    result = json.loads(next(line for line in out.splitlines() if line.startswith("RESULT "))[7:])
    print(f"DAGs parsed in the airflow image's venv: {result['dags']}")
    print(f"task modules that need the model libraries: {sorted(result['model_side'])}")
    assert result["errors"] == {}
    assert {"train_detector", "promote"} <= set(result["dags"]) and any(
        d.startswith("collect") for d in result["dags"]
    )
    assert result["heavy"] == [], "DAG files import heavy libraries at module level"
    parsed = {f.rsplit("/", 1)[-1] for f in result["files"]}
    assert parsed and parsed <= {p.name for p in (REPO / "dags").glob("*.py")}, parsed  # it read our folder
    assert result["missing"] == {}, "docker/airflow/requirements.txt lacks what the task code imports"
    # Only model code may fail for want of model libraries; the data plane and the launchers import.
    assert not [
        m
        for m in result["model_side"]
        if m.startswith(("tasks.collect", "tasks.curate", "tasks.train.launch"))
    ]


def test_airflow_image_has_no_model_libraries(image_venvs):
    out = run_in(
        image_venvs.python("airflow"),
        "import importlib.util as u; print([m for m in ('torch', 'transformers', 'peft') if u.find_spec(m)])",
    )
    assert out.strip() == "[]"


def test_serving_image_imports_its_entry_point(image_venvs):
    modules = entry_point_or_fallback("serve", SERVING_IMPORTS)
    assert "imported" in run_in(
        image_venvs.python("serving"), imports_code(modules), env={"HF_HUB_OFFLINE": "1"}
    )


def test_serving_image_torch_is_the_cpu_build_pinned_at_root(image_venvs):
    out = run_in(image_venvs.python("serving"), "import torch; print(torch.__version__, torch.version.cuda)")
    version, cuda = out.split()
    root = next(
        line for line in (REPO / "requirements.txt").read_text().splitlines() if line.startswith("torch==")
    )
    assert version.split("+")[0] == root.split("==")[1] and cuda == "None"


def test_trainer_image_imports_its_entry_point(image_venvs):
    if not (REPO / "docker" / "trainer" / "requirements.txt").exists():
        if trainer_pending():
            pytest.skip(
                "docker/trainer/ and tasks/train.py are the model helper's; neither is on this branch yet"
            )
        pytest.fail("tasks/train exists but docker/trainer/requirements.txt does not")
    modules = entry_point_or_fallback(
        "train",
        [
            "tasks.settings",
            "tasks.storage",
            "tasks.data.snapshots",
            "torch",
            "transformers",
            "peft",
            "mlflow",
        ],
    )
    assert "imported" in run_in(
        image_venvs.python("trainer"), imports_code(modules), env={"HF_HUB_OFFLINE": "1"}
    )


PLUGINS_CHECK = """
import json
from airflow import plugins_manager
plugins_manager.ensure_plugins_loaded()
names = sorted(p["name"] for p in plugins_manager.get_plugin_info())
print("RESULT " + json.dumps({"plugins": names, "errors": plugins_manager.get_import_errors()}))
"""


def test_airflow_image_loads_the_ui_plugin(image_venvs, tmp_path):
    """The api-server loads plugins/ from AIRFLOW__CORE__PLUGINS_FOLDER (the image copies it there)."""
    if not any((REPO / "plugins").glob("*.py")):
        pytest.skip("plugins/ holds no plugin module yet")
    env = {
        "AIRFLOW_HOME": str(tmp_path),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
    }
    out = run_in(image_venvs.python("airflow"), PLUGINS_CHECK, env=env)
    result = json.loads(next(line for line in out.splitlines() if line.startswith("RESULT "))[7:])
    print(f"plugins loaded in the airflow image's venv: {result['plugins']}")
    assert result["errors"] == {}, (
        "docker/airflow/requirements.txt lacks what plugins/ imports, or a plugin fails"
    )
    assert result["plugins"], "plugins/ has modules but Airflow found no AirflowPlugin in them"
