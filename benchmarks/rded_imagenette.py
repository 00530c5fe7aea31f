"""RDED on Imagenette (IPC 10, mipc 300, 5 crops, factor 2, input 224, EfficientNet-Lite0 on the 10 classes):
`rded_bench.py imagenette` under the name the benchmark plan gives it; every flag of rded_bench.py applies.

    python benchmarks/rded_imagenette.py --precision bf16 --num-workers 2 --compare-to OUT_FP32
"""

from __future__ import annotations

import sys

from rded_bench import main

if __name__ == "__main__":
    sys.argv.insert(1, "imagenette")
    main()
