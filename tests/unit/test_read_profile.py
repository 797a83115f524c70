"""bench --profile's reading of ORT's profile: per node, the median over runs of its time in a run."""
import json

from deltaonnx.bench import read_profile


def _profile(tmp_path, runs):
    """An ORT profile of len(runs) model runs; runs[i] maps node -> [durations of its kernel events in run i]."""
    events, t = [], 0
    for durations in runs:
        start = t
        for node, spans in durations.items():
            for dur in spans:
                events.append({"cat": "Node", "name": f"{node}_kernel_time", "ts": t, "dur": dur,
                               "args": {"op_name": "DeltaConv"}})
                t += dur + 1
        events.append({"cat": "Session", "name": "model_run", "ts": start, "dur": t - start})
        t += 10
    path = tmp_path / "profile.json"
    path.write_text(json.dumps(events))
    return str(path)


def test_one_slow_run_does_not_spread_over_every_frame(tmp_path):
    # The first run is skipped; of the three kept, one waits 1000 us (a page fault on a state's first touch).
    path = _profile(tmp_path, [{"a": [500]}, {"a": [10]}, {"a": [1000]}, {"a": [12]}])
    kernels, runs = read_profile(path, skip_runs=1)
    assert runs == 3
    assert kernels == [("a", "DeltaConv", 12.0)]


def test_a_node_run_twice_in_a_run_counts_both(tmp_path):
    # A node inside a loop body (or split events) sums within its run before the median across runs.
    path = _profile(tmp_path, [{"a": [5, 5]}, {"a": [5, 6]}, {"a": [7, 7]}])
    kernels, runs = read_profile(path, skip_runs=0)
    assert runs == 3 and kernels == [("a", "DeltaConv", 11.0)]
