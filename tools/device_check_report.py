"""Helper of ``tools/device_check.sh``: the environment report, a one-process NCCL check, and the JSON assembly.

    python tools/device_check_report.py env OUT.json         # versions, CUDA device, nvidia-smi, CPUs, git commit
    torchrun --standalone --nproc-per-node 1 tools/device_check_report.py nccl OUT.json
    python tools/device_check_report.py assemble OUT_DIR      # OUT_DIR/device_check.json + a summary on stdout

``assemble`` reads what the shell script leaves in ``OUT_DIR``: ``parts/<part>.status`` (status, exit code, wall
seconds, time limit), ``parts/<part>.reason`` and ``parts/<part>.cmd``, ``logs/<part>.log``, and each part's own
output (the JSON files of the benchmarks, the run folders' ``summary.json``, ``metrics.csv`` and ``curve.json``).
A missing or unreadable file becomes a note in the JSON, never an error.  Only the standard library is used (plus
torch for ``env`` and ``nccl``).
"""

from __future__ import annotations

import csv
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

#: parts in the order the shell script runs them (on CUDA; without CUDA only env and cpu_i2s_inference run)
PARTS = ("env", "cpu_i2s_inference", "i2s_inference", "i2s_train_resnet50", "gpu_tests", "nccl", "standin", "ddp",
         "speedplus_engine", "learning")
LOG_TAIL_LINES = 30


# ------------------------------------------------------------------------------------------------------ env
def _version(dist: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _run(cmd: list[str], timeout: float = 15.0) -> tuple[int, str]:
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        return p.returncode, (p.stdout + p.stderr).strip()
    except (OSError, subprocess.SubprocessError) as exc:
        return -1, f"{type(exc).__name__}: {exc}"


def environment() -> dict:
    repo = Path(__file__).resolve().parents[1]
    env: dict = {"python": sys.version.split()[0], "python_executable_name": Path(sys.executable).name,
                 "platform": platform.platform(), "machine": platform.machine(), "cpu_count": os.cpu_count(),
                 "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
                 "load_avg": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
                 "versions": {d: _version(d) for d in ("torch", "torchvision", "timm", "e3nn", "numpy", "speedpose")}}
    try:
        with open("/proc/meminfo") as fh:
            kb = int(next(line for line in fh if line.startswith("MemTotal")).split()[1])
        env["ram_gib"] = round(kb / 2**20, 1)
    except (OSError, StopIteration, ValueError):
        env["ram_gib"] = None
    rc, out = _run(["git", "-C", str(repo), "rev-parse", "HEAD"])
    env["git_commit"] = out if rc == 0 else None
    rc, out = _run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"])
    env["git_modified_files"] = len(out.splitlines()) if rc == 0 else None
    if shutil.which("nvidia-smi"):
        rc, out = _run(["nvidia-smi"])
        env["nvidia_smi"] = out.splitlines()[:20]
        rc, out = _run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,memory.used,utilization.gpu,"
                        "power.limit,clocks.max.sm", "--format=csv"])
        env["nvidia_smi_query"] = out.splitlines()
    else:
        env["nvidia_smi"] = None
    try:
        import torch
    except Exception as exc:  # noqa: BLE001 - the report must survive a broken install
        env["torch_error"] = f"{type(exc).__name__}: {exc}"
        env["cuda_available"] = False
        return env
    env["versions"]["torch"] = torch.__version__
    env["torch_threads"] = torch.get_num_threads()
    env["cuda_build"] = torch.version.cuda
    env["cuda_available"] = bool(torch.cuda.is_available())
    env["cudnn"] = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    try:
        import torch.distributed as dist

        env["nccl_available"] = bool(dist.is_available() and dist.is_nccl_available())
    except Exception as exc:  # noqa: BLE001
        env["nccl_available"] = f"{type(exc).__name__}: {exc}"
    try:
        v = torch.cuda.nccl.version()
        env["nccl_version"] = ".".join(map(str, v)) if isinstance(v, tuple) else v
    except Exception as exc:  # noqa: BLE001 - CPU builds have no NCCL
        env["nccl_version"] = None
        env["nccl_version_error"] = f"{type(exc).__name__}: {exc}"
    if env["cuda_available"]:
        env["device_count"] = torch.cuda.device_count()
        env["devices"] = []
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            env["devices"].append({"index": i, "name": p.name, "capability": f"{p.major}.{p.minor}",
                                   "memory_gib": round(p.total_memory / 2**30, 1),
                                   "multiprocessors": p.multi_processor_count})
        env["bf16_supported"] = bool(torch.cuda.is_bf16_supported())
    return env


# ----------------------------------------------------------------------------------------------------- nccl
def nccl_check() -> dict:
    """One NCCL process group (as torchrun sets it up): init with the device, all_reduce, broadcast, barrier."""
    from datetime import timedelta

    import torch
    import torch.distributed as dist

    rank, world, local = (int(os.environ.get(k, d)) for k, d in (("RANK", 0), ("WORLD_SIZE", 1), ("LOCAL_RANK", 0)))
    dev = torch.device("cuda", local)
    torch.cuda.set_device(dev)
    t = time.perf_counter()
    dist.init_process_group(backend="nccl", timeout=timedelta(minutes=2), device_id=dev)
    res: dict = {"backend": dist.get_backend(), "world_size": dist.get_world_size(), "rank": dist.get_rank()}
    x = torch.full((1 << 20,), float(rank + 1), device=dev)
    dist.all_reduce(x)
    torch.cuda.synchronize(dev)
    res["init_and_first_allreduce_s"] = time.perf_counter() - t
    expected = world * (world + 1) / 2
    res["allreduce_ok"] = bool(torch.all(x == expected).item())
    y = torch.arange(1024, device=dev, dtype=torch.float32) if rank == 0 else torch.zeros(1024, device=dev)
    dist.broadcast(y, src=0)
    res["broadcast_ok"] = bool(torch.equal(y, torch.arange(1024, device=dev, dtype=torch.float32)))
    big = torch.ones(64 << 20, device=dev)  # 256 MB: a rough all_reduce time (trivial in one process)
    dist.all_reduce(big)
    torch.cuda.synchronize(dev)
    ts = []
    for _ in range(5):
        t = time.perf_counter()
        dist.all_reduce(big)
        torch.cuda.synchronize(dev)
        ts.append(time.perf_counter() - t)
    res["allreduce_256mb_s"] = statistics.median(ts)
    dist.barrier(device_ids=[local])
    v = torch.cuda.nccl.version()
    res["nccl_version"] = ".".join(map(str, v)) if isinstance(v, tuple) else v
    dist.destroy_process_group()
    return res


# ------------------------------------------------------------------------------------------------- assemble
def _read_json(path: Path) -> tuple[object | None, str | None]:
    try:
        return json.loads(path.read_text()), None
    except FileNotFoundError:
        return None, f"{path.name} not written"
    except (OSError, ValueError) as exc:
        return None, f"{path.name}: {type(exc).__name__}: {exc}"


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text(errors="replace").strip()
    except OSError:
        return None


def log_tail(path: Path, n: int = LOG_TAIL_LINES) -> list[str]:
    """Last ``n`` non-empty lines of a log (progress bars' carriage returns split lines)."""
    text = _read_text(path) or ""
    lines = [ln.rstrip() for ln in text.replace("\r", "\n").split("\n") if ln.strip()]
    return lines[-n:]


def pytest_summary(path: Path) -> dict[str, int] | None:
    """Counts of pytest's final line (``3 passed, 1 failed in 12.3s`` -> {"passed": 3, "failed": 1}), or None."""
    for line in reversed(log_tail(path)):
        counts = {k: int(n) for n, k in re.findall(r"(\d+) (passed|failed|errors?|skipped|deselected|xfailed|xpassed)",
                                                    line)}
        if counts and re.search(r" in [\d.]+s", line):
            return counts
    return None


def _metrics_rows(run_dir: Path) -> list[dict]:
    try:
        with (run_dir / "metrics.csv").open(newline="") as fh:
            return list(csv.DictReader(fh))
    except OSError:
        return []


def _float(v: str) -> float | None:
    try:
        x = float(v)
    except (TypeError, ValueError):
        return None
    return x if x == x else None


def throughput(run_dir: Path) -> dict | None:
    """Training samples per second and the data-wait share logged by the engine (``metrics.csv`` train rows).

    The first logged interval holds the warm-up (cuDNN autotuning, first batches): medians are given with and
    without it."""
    rows = _metrics_rows(run_dir)
    sps = [(int(r["step"]), _float(r["value"])) for r in rows if r.get("split") == "train" and r.get("name") ==
           "samples_per_s"]
    wait = [_float(r["value"]) for r in rows if r.get("split") == "train" and r.get("name") == "data_wait_frac"]
    sps = [(s, v) for s, v in sps if v is not None]
    wait = [v for v in wait if v is not None]
    if not sps:
        return None
    vals = [v for _, v in sps]
    out = {"logged_intervals": len(vals), "samples_per_s": [round(v, 1) for v in vals],
           "samples_per_s_median": round(statistics.median(vals), 1),
           "samples_per_s_median_after_first": round(statistics.median(vals[1:]), 1) if len(vals) > 1 else None,
           "data_wait_frac_median": round(statistics.median(wait), 3) if wait else None,
           "data_wait_frac_median_after_first": round(statistics.median(wait[1:]), 3) if len(wait) > 1 else None}
    return out


def val_curve(run_dir: Path) -> list[dict]:
    """Validation rows of ``metrics.csv`` (a partial curve when the run did not finish)."""
    by_step: dict[int, dict] = {}
    for r in _metrics_rows(run_dir):
        if r.get("split") == "val":
            v = _float(r.get("value"))
            if v is not None:
                by_step.setdefault(int(r["step"]), {"step": int(r["step"])})[r["name"]] = v
    return [by_step[k] for k in sorted(by_step)]


def _run_summary(run_dir: Path) -> dict:
    summary, note = _read_json(run_dir / "summary.json")
    res: dict = {"run_dir": str(run_dir)}
    if isinstance(summary, dict):
        res["summary"] = {k: summary.get(k) for k in ("stopped", "global_step", "epochs_completed", "world_size",
                                                         "precision", "wall_s", "last_val")}
    else:
        res["summary_note"] = note
    res["throughput"] = throughput(run_dir)
    return res


def part_figures(name: str, out: Path) -> dict:
    """The figures a part left in ``out`` (whatever exists, whatever its status)."""
    if name == "env":
        data, note = _read_json(out / "env.json")
        return {"env": data} if data is not None else {"note": note}
    if name in ("cpu_i2s_inference", "i2s_inference", "i2s_train_resnet50", "nccl"):
        data, note = _read_json(out / f"{name}.json")
        return {"result": data} if data is not None else {"note": note}
    if name == "gpu_tests":
        return {"pytest_summary": pytest_summary(out / "logs" / "gpu_tests.log")}
    if name == "standin":
        root = out / "standin"
        prep = out / "standin-prep"
        manifest, _ = _read_json(root / ".speedpose-synth.json")  # pipelines.synth.MANIFEST
        crops, _ = _read_json(root / "synthetic" / "crops-96px" / "manifest.json")  # standin_cpu's data.crop_set
        return {"root": str(root), "prep": str(prep), "root_exists": root.is_dir(), "prep_exists": prep.is_dir(),
                "render_complete": manifest.get("complete") if isinstance(manifest, dict) else None,
                "render_params": manifest.get("params") if isinstance(manifest, dict) else None,
                "crop_set_complete": crops.get("complete") if isinstance(crops, dict) else None}
    if name == "ddp":
        return _run_summary(out / "runs" / "ddp")
    if name == "speedplus_engine":
        return _run_summary(out / "runs" / "speedplus")
    if name == "learning":
        run_dir = out / "learning" / "gpu"
        curve, note = _read_json(run_dir / "curve.json")
        minutes = _float(_read_text(out / "parts" / "learning.minutes"))
        res: dict = {"run_dir": str(run_dir), "minutes": minutes}
        if isinstance(curve, dict):
            res.update({k: curve.get(k) for k in ("curve", "final", "steps", "stopped", "train_wall_s", "threads",
                                                   "overrides")})
        else:
            res["curve_note"] = note
            res["partial_curve"] = val_curve(run_dir)
        res["throughput"] = throughput(run_dir)
        return res
    return {}


def part_record(name: str, out: Path) -> dict | None:
    parts = out / "parts"
    status_line = _read_text(parts / f"{name}.status")
    if status_line is None:
        return None
    fields = status_line.split()
    rec: dict = {"status": fields[0] if fields else "unknown"}
    for key, val in zip(("exit_code", "wall_s", "limit_s"), fields[1:]):
        rec[key] = int(val) if val.lstrip("-").isdigit() else None
    reason = _read_text(parts / f"{name}.reason")
    if reason:
        rec["reason"] = reason
    cmd = _read_text(parts / f"{name}.cmd")
    if cmd:
        rec["command"] = cmd
    if rec["status"] == "failed":
        rec["log_tail"] = log_tail(out / "logs" / f"{name}.log")
    if rec["status"] != "skipped":
        rec["log"] = str(Path("logs") / f"{name}.log")
        rec.update(part_figures(name, out))
        rec["headline"] = headline(name, rec)
    return rec


def _fmt(x, spec: str = ".3g") -> str:
    return "-" if x is None else format(x, spec)


def headline(name: str, rec: dict) -> str:
    """One line of figures for the human summary (empty when the part has none)."""
    try:
        if name == "env" and rec.get("env"):
            e = rec["env"]
            dev = (e.get("devices") or [{}])[0]
            return (f"torch {e['versions'].get('torch')}, CUDA {e.get('cuda_build')}, cuDNN {e.get('cudnn')}, "
                    f"NCCL {e.get('nccl_version')}; " + (f"{dev.get('name')} (cc {dev.get('capability')}, "
                                                         f"{dev.get('memory_gib')} GiB, bf16 "
                                                         f"{e.get('bf16_supported')})" if e.get("cuda_available")
                                                         else "no CUDA device"))
        if name in ("cpu_i2s_inference", "i2s_inference") and rec.get("result"):
            r = rec["result"]
            s = f"level {r['level']}: c2f {_fmt(r.get('c2f_s'))} s, refined {_fmt(r.get('c2f_refine_s'))} s / batch " \
                f"of {r['batch']}"
            if "agree_same_cell" in r:
                s += f"; same cell as dense argmax {100 * r['agree_same_cell']:.1f}% of {r['agree_n']}"
            if "dense4_s" in r:
                s += f"; dense-4 {_fmt(r['dense4_s'])} s"
            return s
        if name == "i2s_train_resnet50" and rec.get("result"):
            r = rec["result"]
            ips = ", ".join(f"{k} {v:.0f}" for k, v in r.get("images_per_s", {}).items())
            return f"images/s (batch {r['batch']}): {ips}"
        if name == "gpu_tests":
            counts = rec.get("pytest_summary")
            return ", ".join(f"{n} {k}" for k, n in counts.items()) if counts else "no pytest summary line in the log"
        if name == "nccl" and rec.get("result"):
            r = rec["result"]
            return (f"NCCL {r.get('nccl_version')}: all_reduce ok {r.get('allreduce_ok')}, broadcast ok "
                    f"{r.get('broadcast_ok')}, world {r.get('world_size')}")
        if name in ("ddp", "speedplus_engine"):
            s = rec.get("summary") or {}
            t = rec.get("throughput") or {}
            sps = t.get("samples_per_s_median_after_first") or t.get("samples_per_s_median")
            wait = t.get("data_wait_frac_median_after_first") or t.get("data_wait_frac_median")
            return (f"{s.get('global_step')} steps ({s.get('stopped')}), world {s.get('world_size')}, "
                    f"{s.get('precision')}; {sps} samples/s, data wait {wait}")
        if name == "learning":
            curve = rec.get("curve") or rec.get("partial_curve") or []
            s = f"{rec.get('minutes')} min, {rec.get('steps')} steps, {len(curve)} curve points"
            if curve:
                last = curve[-1]
                s += f"; last val: E_R med {_fmt(last.get('e_r_median_deg'))} deg, Acc@10 {_fmt(last.get('acc@10'))}"
                if "e_r_median_deg_truebox" in last:
                    s += f", E_R med on true boxes {_fmt(last['e_r_median_deg_truebox'])} deg"
            fin = rec.get("final") or {}
            if fin:
                s += "; score " + ", ".join(f"{d} {_fmt(m.get('score'))}" for d, m in fin.items())
            return s
        if name == "standin":
            return (f"{rec.get('root')} (frames complete: {rec.get('render_complete')}, crop set complete: "
                    f"{rec.get('crop_set_complete')})")
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        return f"(summary unavailable: {type(exc).__name__})"
    return ""


def assemble(out: Path) -> int:
    out = Path(out)
    started = _read_text(out / "parts" / "started")
    budget = _read_text(out / "parts" / "budget")
    mode = _read_text(out / "parts" / "mode")
    record: dict = {"tool": "tools/device_check.sh", "schema": 1,
                    "written_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "out_dir": str(out), "mode": mode, "cuda": mode == "cuda",
                    "total_wall_s": int(time.time()) - int(started) if started and started.isdigit() else None,
                    "budget_s": int(budget) if budget and budget.isdigit() else None, "parts": {}}
    for name in PARTS:
        rec = part_record(name, out)
        if rec is not None:
            record["parts"][name] = rec
    counts = {s: sum(1 for r in record["parts"].values() if r["status"] == s) for s in ("ok", "failed", "skipped")}
    record["counts"] = counts
    path = out / "device_check.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=1, default=str))
    tmp.replace(path)
    print(f"\n=== device check ({record['mode']}): {counts['ok']} ok, {counts['failed']} failed, "
          f"{counts['skipped']} skipped; {record['total_wall_s']} s in all ===")
    for name, rec in record["parts"].items():
        wall = f"{rec['wall_s']:>4} s" if isinstance(rec.get("wall_s"), int) else "     -"
        line = f"  {name:<19} {rec['status']:<8} {wall}  "
        line += rec.get("reason", "") if rec["status"] != "ok" else rec.get("headline", "")
        print(line)
        if rec["status"] == "failed":
            for ln in rec.get("log_tail", [])[-5:]:
                print(f"      | {ln[:160]}")
    print(f"written: {path}")
    return 1 if counts["failed"] else 0


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in ("env", "nccl", "assemble"):
        print(__doc__, file=sys.stderr)
        return 2
    cmd, target = argv
    if cmd == "assemble":
        return assemble(Path(target))
    data = environment() if cmd == "env" else nccl_check()
    if cmd == "nccl" and int(os.environ.get("RANK", "0")) != 0:
        return 0
    Path(target).write_text(json.dumps(data, indent=1, default=str))
    print(json.dumps(data, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
