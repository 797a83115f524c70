"""Copying the caller's SessionOptions, so registering the op library never mutates theirs."""
from __future__ import annotations

import onnxruntime as ort

# SessionOptions has no copy and no way to list its config entries, so the documented keys are probed
# (onnxruntime_session_options_config_keys.h); entries set under other keys are not carried over.
_KNOWN_CONFIG_KEYS = (
    "session.disable_prepacking", "session.use_env_allocators", "session.load_model_format",
    "session.save_model_format", "session.set_denormal_as_zero", "session.disable_quant_qdq",
    "session.disable_double_qdq_remover", "session.enable_quant_qdq_cleanup",
    "optimization.enable_gelu_approximation", "session.disable_aot_function_inlining",
    "optimization.memory_optimizer_config", "optimization.enable_memory_probe_recompute_config",
    "optimization.disable_specified_optimizers", "session.use_device_allocator_for_initializers",
    "session.inter_op.allow_spinning", "session.intra_op.allow_spinning", "session.use_ort_model_bytes_directly",
    "session.qdqisint8allowed", "session.x64quantprecision", "session.dynamic_block_base",
    "session.force_spinning_stop", "session.strict_shape_type_inference", "session.allow_released_opsets_only",
    "session.node_partition_config_file", "session.intra_op_thread_affinities",
    "session.debug_layout_transformation", "session.disable_cpu_ep_fallback",
    "session.collect_node_memory_stats_to_file", "session.graph_optimizations_loop_level",
    "session.use_ort_model_bytes_for_initializers", "session.disable_model_compile",
    "session.record_ep_graph_assignment_info", "ep.context_enable", "ep.context_file_path",
    "ep.context_embed_mode", "ep.context_node_name_prefix", "ep.share_ep_contexts",
    "mlas.enable_gemm_fastmath_arm64_bfloat16", "session.qdq_matmulnbits_accuracy_level",
    "ep.dynamic.workload_type",
)
_COPIED_ATTRIBUTES = (
    "enable_cpu_mem_arena", "enable_mem_pattern", "enable_mem_reuse", "enable_profiling", "execution_mode",
    "execution_order", "graph_optimization_level", "inter_op_num_threads", "intra_op_num_threads",
    "log_severity_level", "log_verbosity_level", "logid", "optimized_model_filepath", "profile_file_prefix",
    "use_deterministic_compute", "use_per_session_threads",
)


def copy_session_options(source: ort.SessionOptions | None) -> ort.SessionOptions:
    """A new SessionOptions with the caller's settings, so registering the op library never mutates theirs.

    ORT's Python API cannot read back free-dimension overrides, added initializers or custom op libraries the
    caller registered; those are not carried over (use the model itself or pass them another way).
    """
    options = ort.SessionOptions()
    if source is None:
        return options
    if source.has_providers():
        raise ValueError(
            "DeltaSession: sess_options has execution providers added with add_provider(), which cannot be "
            "copied; pass them as DeltaSession(..., providers=[...]) instead"
        )
    for name in _COPIED_ATTRIBUTES:
        try:
            setattr(options, name, getattr(source, name))
        except (AttributeError, TypeError):  # attribute absent in this ORT version, or read-only
            pass
    for key in _KNOWN_CONFIG_KEYS:
        try:
            value = source.get_session_config_entry(key)
        except RuntimeError:  # not set on the caller's options
            continue
        options.add_session_config_entry(key, value)
    return options


def provider_name(provider: str | tuple) -> str:
    return provider[0] if isinstance(provider, tuple) else provider
