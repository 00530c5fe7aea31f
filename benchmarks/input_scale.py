r"""RDED's input path at ImageNet's shape on CPU: synthetic wnid folders, a cheap observer, so that raydd's own
costs show (issue 31).

    D=/tmp/in-scale
    python benchmarks/input_scale.py data    --data $D --classes 100 --per-class 200   # tree, Parquet, observer
    python benchmarks/input_scale.py memory  --data $D [--before OLD]  # driver peak RSS, IPC 10 against IPC 50
    python benchmarks/input_scale.py latency --data $D --classes 100 --per-class 16  # local vs S3 + 50 ms
    python benchmarks/input_scale.py parquet --data $D                 # bytes read against the candidates' bytes
    python benchmarks/input_scale.py classes --data /tmp/in-classes    # 16,000 candidates in 10 vs 1,000 classes

Stages:
  data     N wnid folders × M JPEGs of natural small sizes (short side 64-128 px, smooth colour fields with grain,
           quality 90, seeded), the same images as a 16-shard Parquet dataset in Hugging Face's layout (rows
           shuffled across shards, row groups of 100, label an integer with the wnids as ClassLabel names), and
           the observer: a seeded random ConvNet-3 of width 4 at 224 px (a few MFLOP a crop) saved as a checkpoint.
  memory   distil at 224 px, factor 2, mipc = M: once IPC 10 in full (its scores), then IPC 10 and IPC 50 again
           from those scores, each distil in a fresh process whose peak resident memory is the driver's: in all,
           private, and pages of Ray's shared object store it has read (bounded by the store, not the driver's).
  latency  IPC 1, factor 2 on the same tree from local disk; through a filesystem that holds every request 50 ms
           (the local disk behind fsspec, as ``delayed://``: latency alone); and from an S3 server (moto, its own
           process) behind a proxy that holds every request 50 ms (latency and the server's own CPU, which here
           shares the cores with raydd); the wall of each, every stage included, and the servers' CPU time.
  parquet  the candidates' blocks as the pipeline forms them (all M images of each class, in shard order, blocks
           of 256) read through a filesystem that counts bytes: bytes read against the candidates' own bytes;
           then bf16's fp32 refinement (each class's best 47, 32 or 256 a block) and assembly's reads of IPC 10's
           winners, by image (16 images a block) and by cell (shard order).
  classes  the same 16,000 candidates as 10 classes × 1,600 and as 1,000 classes × 16 (two trees made by ``data``
           under the folder, each with its observer), IPC 1, factor 2, mipc = all, each distil in a fresh process:
           the wall and the driver's peak memory should barely depend on the number of classes. With bf16
           scoring the fp32 refinement rescores (k + margin) images a class, and assembly makes an image a class:
           both grow with the output; ``--precision fp32`` leaves the refinement out.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from _images import natural_jpegs
from fsspec.implementations.local import LocalFileSystem

HERE = Path(__file__).resolve().parent
DELAY_S = 0.05


def make_data(args: argparse.Namespace) -> dict[str, Any]:
    import pyarrow as pa
    import pyarrow.parquet as pq
    import torch

    from raydd.data.class_map import imagenet_wnids
    from raydd.models import get_entry, get_model
    from raydd.train import save_checkpoint

    root = Path(args.data)
    wnids = list(imagenet_wnids()[:args.classes])
    started = time.perf_counter()
    rows = []
    for c, wnid in enumerate(wnids):
        jpegs = natural_jpegs(str(root / "train" / wnid), c, args.per_class, short=(64, 129))
        rows += [(data, c, f"{wnid}/{i:05d}.JPEG") for i, data in enumerate(jpegs)]
    order = np.random.default_rng(0).permutation(len(rows))
    features = {"image": {"_type": "Image"}, "label": {"names": wnids, "_type": "ClassLabel"}}
    meta = {b"huggingface": json.dumps({"info": {"features": features}}).encode()}
    (root / "parquet").mkdir(exist_ok=True)
    for shard, part in enumerate(np.array_split(order, 16)):
        image = pa.array([{"bytes": rows[i][0], "path": rows[i][2]} for i in part],
                         pa.struct([("bytes", pa.binary()), ("path", pa.string())]))
        table = pa.table({"image": image, "label": pa.array([rows[i][1] for i in part], pa.int64())})
        pq.write_table(table.replace_schema_metadata(meta), root / "parquet" / f"train-{shard:05d}-of-00016.parquet",
                       row_group_size=100)
    torch.manual_seed(0)
    args_ = {"num_classes": len(wnids), "input_size": 224, "width": 4}
    save_checkpoint(root / "observer", model=get_model("convnet3", **args_), model_name="convnet3", model_args=args_,
                    normalization=get_entry("convnet3").normalization, input_size=224, classes=wnids, epoch=1)
    size = sum(len(r[0]) for r in rows)
    return {"images": len(rows), "classes": len(wnids), "mean_kib": round(size / len(rows) / 1024, 2),
            "wall_s": round(time.perf_counter() - started, 1)}


class _Peaks:
    """Peaks of this process's private (RssAnon) and shared (RssShmem: pages of Ray's object store it has read)
    resident memory, sampled every 0.1 s from /proc/self/status."""

    def __init__(self) -> None:
        import threading

        self.peak = {"RssAnon": 0, "RssShmem": 0}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            for line in Path("/proc/self/status").read_text().splitlines():
                key, _, value = line.partition(":")
                if key in self.peak:
                    self.peak[key] = max(self.peak[key], int(value.split()[0]))

    def __enter__(self) -> _Peaks:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def distill_once(args: argparse.Namespace) -> dict[str, Any]:
    """One distil in this process (the driver); its peak resident memory is this process's."""
    import fsspec

    import raydd
    from raydd.rded import RdedConfig, distill

    fsspec.register_implementation("delayed", _Delayed, clobber=True)

    values = {"data": args.source, "out": args.out, "observers": [f"checkpoint@{Path(args.data) / 'observer'}"],
              "ipc": args.ipc, "factor": 2, "mipc": args.per_class, "num_crops": 5, "input_size": 224,
              "from_scores": args.from_scores, "refine_margin": args.refine_margin,
              **({"precision": args.precision} if args.precision else {})}
    started = time.perf_counter()
    with _Peaks() as peaks:
        distilled = distill(RdedConfig(**values))
    wall = time.perf_counter() - started
    stats = distilled.stats
    return {"ipc": args.ipc, "from_scores": args.from_scores is not None, "source": args.source,
            "raydd": str(Path(raydd.__file__).parent), "wall_s": round(wall, 1),
            "stage_s": {k: round(v, 1) for k, v in stats["timings"].items()}, "images": stats["images"],
            "driver_peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3),
            "driver_peak_private_gib": round(peaks.peak["RssAnon"] / 2**20, 3),
            "driver_peak_object_store_pages_gib": round(peaks.peak["RssShmem"] / 2**20, 3)}


class _Delayed(LocalFileSystem):
    """The local disk as ``delayed://``, every open (a GET) and folder listing held ``DELAY_S`` first: an object
    store's first-byte latency without a server that shares the cores. Stats are not held: fsspec's local
    listing stats every entry, which an object store's listing returns in one answer. Defined here, it reaches
    Ray's workers inside the pickled filesystem raydd hands them."""

    protocol = "delayed"
    cachable = False

    @classmethod
    def _strip_protocol(cls, path):
        return super()._strip_protocol(str(path).removeprefix("delayed://"))

    def _open(self, path, *args, **kwargs):
        time.sleep(DELAY_S)
        return super()._open(path, *args, **kwargs)

    def ls(self, path, *args, **kwargs):
        time.sleep(DELAY_S)
        return super().ls(path, *args, **kwargs)


del _Delayed._instantiation_lock  # fsspec's per-class lock cannot be pickled; the base class's serves instead


def _child(args: argparse.Namespace, env: dict[str, str] | None = None, **overrides: Any) -> dict[str, Any]:
    values = {"data": args.data, "per_class": args.per_class, **overrides}
    cmd = [sys.executable, str(HERE / "input_scale.py"), "one"]
    for key, value in values.items():
        if value is not None:
            cmd += [f"--{key.replace('_', '-')}", str(value)]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-3000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def memory(args: argparse.Namespace) -> dict[str, Any]:
    """IPC 10 in full once (its scores); then IPC 10 and 50 from those scores (no refinement pass, which at IPC 50
    would rescore every candidate), with this tree and, given ``--before PATH``, with an older checkout."""
    runs = Path(args.data) / "runs"
    source = str(Path(args.data) / "train")
    result: dict[str, Any] = {}
    if not (runs / "ipc10" / "scores.parquet").exists():
        shutil.rmtree(runs, ignore_errors=True)
        result["full_ipc10"] = _child(args, source=source, ipc=10, out=runs / "ipc10")
    trees = {"now": None, **({"before": args.before} if args.before else {})}
    for tree, path in trees.items():
        env = {**os.environ, "PYTHONPATH": path} if path else None
        for ipc in (10, 50):
            out = runs / f"{tree}-ipc{ipc}"
            shutil.rmtree(out, ignore_errors=True)
            result[f"{tree}_ipc{ipc}"] = _child(args, env=env, source=source, ipc=ipc, out=out, refine_margin=0,
                                                from_scores=runs / "ipc10")
        for key in ("driver_peak_rss_gib", "driver_peak_private_gib"):
            result[f"{tree}_{key}_ipc50_over_ipc10"] = round(result[f"{tree}_ipc50"][key]
                                                             / result[f"{tree}_ipc10"][key], 3)
    return result


def classes(args: argparse.Namespace) -> dict[str, Any]:
    """The same candidates spread over few or many classes: what grows with the classes, not the images."""
    result: dict[str, Any] = {"candidates": 16_000, "precision": args.precision or "auto"}
    for n in (10, 1000):
        data = Path(args.data) / f"classes{n}"
        per_class = 16_000 // n
        if not (data / "observer").exists():
            result[f"data_{n}"] = make_data(argparse.Namespace(data=str(data), classes=n, per_class=per_class))
        out = data / "run"
        shutil.rmtree(out, ignore_errors=True)
        result[f"classes_{n}"] = _child(argparse.Namespace(data=str(data), per_class=per_class),
                                        source=str(data / "train"), ipc=1, out=out, precision=args.precision)
    for key in ("wall_s", "driver_peak_rss_gib", "driver_peak_private_gib"):
        result[f"{key}_1000_over_10"] = round(result["classes_1000"][key] / result["classes_10"][key], 3)
    return result


async def _delay_proxy(listen: int, target: int, delay: float) -> None:
    """Passes each TCP connection on to ``target``, holding every chunk the client sends ``delay`` s: a request
    (one chunk for a GET or a listing) reaches the server 50 ms late, the round trip of a distant object store."""
    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, hold: float) -> None:
        try:
            while data := await reader.read(1 << 16):
                if hold:
                    await asyncio.sleep(hold)
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def serve(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        server_r, server_w = await asyncio.open_connection("127.0.0.1", target)
        await asyncio.gather(pipe(client_r, server_w, delay), pipe(server_r, client_w, 0.0))

    server = await asyncio.start_server(serve, "127.0.0.1", listen, limit=1 << 20)
    async with server:
        await server.serve_forever()


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for(port: int) -> None:
    for _ in range(100):
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {port}")


def latency(args: argparse.Namespace) -> dict[str, Any]:
    import pyarrow.fs as pafs

    tree = Path(args.data) / "train"
    runs = Path(args.data) / "latency-runs"
    shutil.rmtree(runs, ignore_errors=True)
    s3_port, proxy_port = _port(), _port()
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}
    moto = subprocess.Popen([str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(s3_port)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    proxy = subprocess.Popen([sys.executable, str(HERE / "input_scale.py"), "proxy", "--data", args.data,
                              "--listen", str(proxy_port), "--target", str(s3_port)])
    try:
        _wait_for(s3_port)
        _wait_for(proxy_port)
        s3 = pafs.S3FileSystem(endpoint_override=f"http://127.0.0.1:{s3_port}", access_key="bench",
                               secret_key="bench", region="us-east-1", allow_bucket_creation=True)
        s3.create_dir("bench")
        started = time.perf_counter()
        pafs.copy_files(str(tree), "bench/train", source_filesystem=pafs.LocalFileSystem(), destination_filesystem=s3,
                        use_threads=True)
        upload_s = time.perf_counter() - started
        local = _child(args, source=str(tree), ipc=1, out=runs / "local")
        delayed = _child(args, source=f"delayed://{tree}", ipc=1, out=runs / "delayed")
        before = {name: _cpu_s(p.pid) for name, p in (("s3_server", moto), ("proxy", proxy))}
        remote = _child(args, env={**env, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{proxy_port}"},
                        source="s3://bench/train", ipc=1, out=runs / "s3")
        remote["server_cpu_s"] = {name: round(_cpu_s(p.pid) - before[name], 1)
                                  for name, p in (("s3_server", moto), ("proxy", proxy))}
    finally:
        proxy.terminate()
        moto.terminate()
    return {"delay_s": DELAY_S, "upload_s": round(upload_s, 1), "local": local, "delayed_filesystem": delayed,
            "s3_delayed": remote, "delayed_filesystem_over_local": round(delayed["wall_s"] / local["wall_s"], 3),
            "s3_over_local": round(remote["wall_s"] / local["wall_s"], 3)}


def _cpu_s(pid: int) -> float:
    """User and system CPU seconds a process has used so far (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def parquet(args: argparse.Namespace) -> dict[str, Any]:
    import pyarrow.fs as pafs
    import pyarrow.parquet as pq
    from fsspec.implementations.local import LocalFileSystem

    from raydd.data import list_images, read_image_bytes, sample_per_class
    from raydd.rded.plan import in_shard_order

    def shard_order(names: list[str]) -> list[str]:  # the pipeline's order of Parquet rows
        return [names[i] for i in in_shard_order(names)]

    class Counting(LocalFileSystem):
        cachable = False

        def __init__(self) -> None:
            super().__init__()
            self.bytes_read = 0

        def _open(self, path, mode="rb", **kwargs):
            f = super()._open(path, mode, **kwargs)
            read = f.read

            def counted(*a):
                data = read(*a)
                self.bytes_read += len(data)
                return data

            f.read = counted
            return f

    index = list_images(str(Path(args.data) / "parquet"))
    drawn = sample_per_class(index, args.per_class, seed=0)
    refs = [ref for name in index.classes for ref in drawn[name]]
    by_shard = shard_order(refs)
    result: dict[str, Any] = {"candidates": len(refs), "shards": 16, "block_images": 256}
    for name, order in (("shard_order", by_shard), ("class_order", refs)):
        counting = Counting()
        fs = pafs.PyFileSystem(pafs.FSSpecHandler(counting))
        own = 0
        for start in range(0, len(order), 256):
            own += sum(len(b) for b in read_image_bytes(order[start:start + 256], fs) if b)
        result[name] = {"bytes_read": counting.bytes_read, "candidates_bytes": own,
                        "read_over_candidates": round(counting.bytes_read / own, 3)}
    # With bf16 scoring, the fp32 refinement reads each class's best 40 + 40 // 8 + 2 images again, in shard order,
    # 32 or 256 a block (which ones does not matter here: every row group holds some).
    refined = shard_order([ref for name in index.classes for ref in drawn[name][:47]])
    for block in (32, 256):
        counting = Counting()
        fs = pafs.PyFileSystem(pafs.FSSpecHandler(counting))
        for start in range(0, len(refined), block):
            read_image_bytes(refined[start:start + block], fs)
        result[f"refinement_blocks_of_{block}"] = {
            "images": len(refined), "bytes_read": counting.bytes_read,
            "read_over_candidates": round(counting.bytes_read / result["shard_order"]["candidates_bytes"], 3)}
    # Assembly (IPC 10, factor 2) reads each class's 40 winners again, four a distilled image, 16 images a block.
    winners = {name: drawn[name][:40] for name in index.classes}
    images = [[winners[name][i + 10 * k] for k in range(4)] for name in index.classes for i in range(10)]
    counting = Counting()
    fs = pafs.PyFileSystem(pafs.FSSpecHandler(counting))
    for start in range(0, len(images), 16):
        read_image_bytes([ref for image in images[start:start + 16] for ref in image], fs)
    winner_bytes = sum(len(b) for b in read_image_bytes([r for image in images for r in image],
                                                         pafs.LocalFileSystem()))
    result["assembly_by_image"] = {"bytes_read": counting.bytes_read, "winners_bytes": winner_bytes,
                                   "read_over_winners": round(counting.bytes_read / winner_bytes, 3)}
    cells = shard_order([ref for image in images for ref in image])  # the pipeline's cells
    counting = Counting()
    fs = pafs.PyFileSystem(pafs.FSSpecHandler(counting))
    for start in range(0, len(cells), 256):
        read_image_bytes(cells[start:start + 256], fs)
    result["assembly_by_cell"] = {"bytes_read": counting.bytes_read,
                                  "read_over_winners": round(counting.bytes_read / winner_bytes, 3)}
    everything = result["shard_order"]["bytes_read"] + counting.bytes_read
    result["scoring_and_assembly_over_candidates"] = round(everything / result["shard_order"]["candidates_bytes"], 3)
    refinement = result["refinement_blocks_of_256"]["bytes_read"]  # the pipeline's blocks for Parquet sources
    result["with_refinement_over_candidates"] = round((everything + refinement)
                                                      / result["shard_order"]["candidates_bytes"], 3)
    # raydd before issue 31 read, for each block, the image column of every shard it touched, whole.
    column = {}
    for path in {r.rpartition("#")[0] for r in refs}:
        meta = pq.ParquetFile(path).metadata
        column[path] = sum(meta.row_group(g).column(c).total_compressed_size for g in range(meta.num_row_groups)
                           for c in range(meta.num_columns) if meta.schema.column(c).path.split(".")[0] == "image")
    whole = sum(column[p] for start in range(0, len(refs), 256)
                for p in {r.rpartition("#")[0] for r in refs[start:start + 256]})
    result["before_class_order_whole_shards"] = {"bytes_read": whole,
                                                 "read_over_candidates": round(whole / result["shard_order"]
                                                                               ["candidates_bytes"], 3)}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stage", choices=("data", "memory", "latency", "parquet", "classes", "one", "proxy"))
    parser.add_argument("--data", required=True)
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--per-class", type=int, default=200, help="JPEGs per class, and mipc")
    parser.add_argument("--json", help="also append the result here")
    parser.add_argument("--source", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--ipc", type=int, default=10, help=argparse.SUPPRESS)
    parser.add_argument("--from-scores", help=argparse.SUPPRESS)
    parser.add_argument("--refine-margin", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--precision", help="classes: the scoring precision (default: raydd's auto)")
    parser.add_argument("--before", help="memory: a checkout of raydd to measure the same way (PYTHONPATH)")
    parser.add_argument("--listen", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--target", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.stage == "proxy":
        asyncio.run(_delay_proxy(args.listen, args.target, DELAY_S))
        return
    from raydd.runtime import tune_allocator

    tune_allocator()
    if args.stage == "one":
        print(json.dumps(distill_once(args)))
        return
    from _machine import machine

    result = {"benchmark": "input_scale", "stage": args.stage,
              **{"data": make_data, "memory": memory, "latency": latency, "parquet": parquet,
                 "classes": classes}[args.stage](args),
              "machine": machine()}
    print(json.dumps(result, indent=2))
    if args.json:
        with open(args.json, "a") as f:
            f.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
