"""Files written so that a reader never sees half of one: to a temporary name beside it, then renamed."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import yaml

__all__ = ["write_config_yaml", "write_json", "write_parquet"]


def write_parquet(table: pa.Table, path: Path) -> None:
    """Write through a temporary name so that a crash never leaves a half-written table."""
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, path)


def write_json(data: Any, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    os.replace(tmp, path)


def write_config_yaml(values: dict[str, Any], path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(yaml.safe_dump(values, sort_keys=False))
    os.replace(tmp, path)
