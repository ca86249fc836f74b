"""The service never imports TensorFlow, Keras or tf2onnx; shared modules stay light too."""

import json
import subprocess
import sys

SHARED = [
    "service.contract.preprocessing",
    "service.contract.postprocessing",
    "service.contract.metadata",
]
TRAINING_ONLY = ["tensorflow", "keras", "tf2onnx"]


def _loaded_after(code: str, candidates: list[str]) -> list[str]:
    probe = (
        code
        + f"\nimport json, sys\nprint(json.dumps([m for m in {candidates!r} if m in sys.modules]))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_shared_modules_import_without_heavy_dependencies():
    code = "".join(f"import {m}\n" for m in SHARED)
    assert _loaded_after(code, [*TRAINING_ONLY, "flask", "onnxruntime"]) == []


def test_the_whole_app_serving_requests_never_loads_tensorflow():
    code = (
        "from service.app import create_app\n"
        "client = create_app().test_client()\n"
        "r = client.post('/predict?model=circles', json={'instance': [0, 0]})\n"
        "assert r.status_code == 200\n"
        "assert client.get('/models').status_code == 200\n"
    )
    assert _loaded_after(code, [*TRAINING_ONLY, "tensorboard", "sklearn"]) == []


def _import_graph() -> dict[str, set[str]]:
    """service module -> the service modules it imports (type-checking imports included;
    importing ``a.b.c`` also runs the package ``a.b``)."""
    import ast

    from tests.helpers import ROOT

    root = ROOT / "service"
    modules = {}
    for path in root.rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = path

    def packages_of(module: str) -> set[str]:
        pieces = module.split(".")
        return {
            ".".join(pieces[:i]) for i in range(1, len(pieces)) if ".".join(pieces[:i]) in modules
        }

    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets |= {a.name for a in node.names if a.name in modules}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                for alias in node.names:
                    full = f"{node.module}.{alias.name}"
                    targets.add(full if full in modules else node.module)
        targets = {t for t in targets if t in modules}
        for target in set(targets):
            targets |= packages_of(target)
        graph[name] = targets - {name} - packages_of(name)
    return graph


def test_no_import_cycles_in_service():
    graph = _import_graph()
    assert {"service.app", "service.inference.dataplane", "service.protocols.v2"} <= set(graph)
    state: dict[str, int] = {}
    cycles = []

    def visit(module: str, trail: list[str]) -> None:
        state[module] = 1
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                cycles.append([*trail[trail.index(target) :], target])
            elif target not in state:
                visit(target, [*trail, target])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert cycles == []


# The frame every layer may use; it imports only itself.
FRAME = {"settings", "errors", "metrics", "logs", "keys", "instance"}
# Each folder of service/ and the folders it may import besides itself and the frame:
# the door (http) knows no model; protocols decode into the dataplane; the dataplane
# (inference) knows no HTTP; models know only the contract; the contract (shared with
# training) knows nothing of serving.
LAYERS = {
    "http": set(),
    "protocols": {"http", "inference", "models", "contract"},
    "inference": {"models", "contract"},
    "models": {"contract"},
    "contract": set(),
}


def _layer(module: str) -> str:
    return module.split(".")[1] if module.count(".") else ""


def test_each_folder_imports_only_the_layers_below_it():
    graph = _import_graph()
    assert set(LAYERS) <= {_layer(m) for m in graph}, "a layer folder is missing"
    broken = []
    for module, targets in graph.items():
        layer = _layer(module)
        if layer in LAYERS:
            allowed = LAYERS[layer] | {layer} | FRAME | {""}
        elif layer in FRAME:
            allowed = FRAME
        else:
            continue  # service/__init__ and app: the top, which nothing imports
        broken += [f"{module} -> {t}" for t in targets if _layer(t) not in allowed]
    assert broken == [], broken


def test_every_module_lives_in_a_layer_or_the_frame():
    graph = _import_graph()
    top = {m.split(".")[1] for m in graph if m.count(".") == 1}
    assert top == FRAME | set(LAYERS) | {"app"}


def test_nothing_imports_the_app_factory():
    graph = _import_graph()
    assert [m for m, targets in graph.items() if "service.app" in targets] == []
