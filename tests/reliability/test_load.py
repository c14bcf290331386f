"""Load: ``pe-seg infer`` over 50 cases in one call, with flat memory and no creeping time per case.

The run happens in a fresh subprocess (so that this test process's own allocations do not count) through
the real command line front end; a hook on the runner's per-case callback records the process's peak RSS
and the CPU time of each case as it finishes (CPU time, not wall time: other work on a shared machine slows
the wall clock, not the work the process itself does per case).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from inference.helpers import make_ct

from pe_segmentation.io.volume_files import write_volume

CASES = 50

#: Runs pe_segmentation.infer(INPUT, OUTPUT, CHECKPOINT) on the CPU with probability maps, as `pe-seg infer` does, and
#: prints one JSON line per finished case: peak RSS (kB) and CPU seconds.
DRIVER = textwrap.dedent(
    """
    import json, resource, sys, time
    import pe_segmentation

    last = [time.process_time()]

    def record(result, done, total):
        now = time.process_time()
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(json.dumps({"case": done, "ok": result.ok, "peak_kb": peak, "seconds": now - last[0]}), flush=True)
        last[0] = now

    source, output, checkpoint = sys.argv[1:4]
    run = pe_segmentation.infer(source, output, checkpoint, device="cpu", save_probability=True, on_result=record)
    sys.exit(1 if run.failed else 0)
    """
)


@pytest.mark.slow
def test_fifty_cases_in_one_call_keep_memory_flat_and_time_steady(tmp_path, tiny_checkpoint):
    inputs = tmp_path / "inputs"
    affine = np.diag([-1.5, -1.5, 2.5, 1.0])
    for index in range(CASES):
        write_volume(make_ct(affine, seed=index), inputs / f"case_{index:02d}.nii.gz")
    out = tmp_path / "out"
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable,
        "-c",
        DRIVER,
        inputs,
        out,
        tiny_checkpoint,
    ]
    done = subprocess.run(
        [str(part) for part in command],
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]

    rows = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert [row["case"] for row in rows] == list(range(1, CASES + 1))
    assert all(row["ok"] for row in rows)
    assert len(list(out.iterdir())) == CASES

    peak = {row["case"]: row["peak_kb"] for row in rows}
    assert peak[CASES] <= 1.10 * peak[5], f"peak RSS grew from {peak[5]} kB (case 5) to {peak[CASES]} kB"
    # tighter than 10% of a 600 MB process: 0.5 MB kept per case fails (cyclic garbage kept 45 MB here once)
    assert peak[CASES] - peak[5] <= 20_000, f"peak RSS grew by {peak[CASES] - peak[5]} kB over 45 cases"

    seconds = [row["seconds"] for row in rows]
    early, late = statistics.median(seconds[5:15]), statistics.median(seconds[-10:])
    assert late <= 1.5 * early + 0.02, f"per-case CPU time crept from {early:.3f} s to {late:.3f} s"
