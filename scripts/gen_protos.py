"""Generate the Python gRPC stubs from protos/ into trainer_client/_proto/.

    python scripts/gen_protos.py            # regenerate in place
    python scripts/gen_protos.py --out DIR  # generate elsewhere (the test that the committed
                                            # stubs are current compares the two)

Needs grpcio-tools (the ``test`` extra). The stubs are committed so that the trainer's light
install needs no protoc.
"""

from __future__ import annotations

import argparse
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]
PROTOS = ROOT / "protos"
PACKAGE = "trainer_client._proto"


def generate(out: pathlib.Path) -> list[pathlib.Path]:
    from grpc_tools import protoc

    out.mkdir(parents=True, exist_ok=True)
    sources = sorted(PROTOS.rglob("*.proto"))
    import grpc_tools

    include = pathlib.Path(grpc_tools.__file__).parent / "_proto"
    args = [
        "protoc",
        f"-I{PROTOS}",
        f"-I{include}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        *[str(s.relative_to(PROTOS)) for s in sources],
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    written = []
    for path in sorted(out.rglob("*.py*")):
        text = path.read_text()
        # protoc writes absolute imports of the proto package; make them package-relative.
        text = text.replace(
            "from reasoning_arena.v1 import", f"from {PACKAGE}.reasoning_arena.v1 import"
        )
        path.write_text(text)
        written.append(path)
    for d in [out, *[p for p in out.rglob("*") if p.is_dir()]]:
        (d / "__init__.py").touch()
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=pathlib.Path, default=ROOT / "trainer_client" / "_proto")
    args = parser.parse_args()
    for path in generate(args.out):
        print(path.relative_to(args.out))


if __name__ == "__main__":
    main()
