"""Queue sample workflows on a running ComfyUI and wait for their outputs.

    python workflows/run_in_comfyui.py [--server http://127.0.0.1:8188] workflows/asd_t2v_default_1star.json ...

Each UI-format file is converted to the API (prompt) format with comfy-cli's converter against
the server's own /object_info, POSTed to /prompt, and /history/{id} is polled until it
finishes. Prints one line per workflow: status, seconds and the files it wrote. Exit status
1 if any failed. This is how the workflows were checked in a real ComfyUI (docs/comfyui.md).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path


def call(server: str, path: str, payload: dict | None = None) -> dict:
    data = None if payload is None else json.dumps(payload).encode()
    request = urllib.request.Request(server + path, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def run(server: str, workflow_file: Path, object_info: dict, timeout: float) -> tuple[str, float, list[str]]:
    from comfy_cli.workflow_to_api import convert_ui_to_api

    prompt = convert_ui_to_api(json.loads(workflow_file.read_text()), object_info)
    start = time.perf_counter()
    try:
        queued = call(server, "/prompt", {"prompt": prompt, "client_id": str(uuid.uuid4())})
    except urllib.error.HTTPError as error:  # ComfyUI's validation errors come back as 400 with a JSON body
        return f"refused: {error.read().decode()[:600]}", 0.0, []
    if queued.get("node_errors"):  # some outputs failed validation: ComfyUI runs the others and still says 200
        return f"refused: {json.dumps(queued['node_errors'])[:600]}", 0.0, []
    prompt_id = queued["prompt_id"]
    while time.perf_counter() - start < timeout:
        history = call(server, f"/history/{prompt_id}").get(prompt_id)
        if history and history.get("status", {}).get("completed") is not None:
            status = history["status"]
            files = [item.get("filename") for output in history.get("outputs", {}).values()
                     for items in output.values() if isinstance(items, list)
                     for item in items if isinstance(item, dict) and "filename" in item]
            state = status.get("status_str", "?")
            if state != "success":
                errors = [m for m in status.get("messages", []) if m[0] == "execution_error"]
                state += f": {json.dumps(errors)[:600]}"
            return state, time.perf_counter() - start, files
        time.sleep(1.0)
    return "timed out", time.perf_counter() - start, []


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workflows", nargs="+", type=Path)
    parser.add_argument("--server", default="http://127.0.0.1:8188")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per workflow")
    args = parser.parse_args(argv)
    try:
        object_info = call(args.server, "/object_info")
    except urllib.error.URLError as error:
        raise SystemExit(f"no ComfyUI server answers at {args.server} ({error.reason}): start one with "
                         "`python main.py --listen 127.0.0.1 --port N` in ComfyUI's folder and pass --server") from None
    failed = 0
    for workflow in args.workflows:
        state, seconds, files = run(args.server, workflow, object_info, args.timeout)
        failed += state != "success"
        print(f"{workflow.name}: {state} in {seconds:.1f} s, outputs {files}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
