"""How a stream's state is bound to ORT's run (docs/design.md#state): the first run of a binding feeds
empty state (or a loaded one) and takes the presents and maps where ORT writes them, or into a spare's buffers; from
then on each state buffer is both its past input and its present output (a stateless binding's outputs go to shared
scratch, its pasts stay empty), and the maps stay bound to their buffers."""
from __future__ import annotations

from typing import Callable, Mapping, Sequence

import numpy as np
import onnxruntime as ort

from ..graph_passes.metadata import StateEntry
from .binding import StreamBinding, as_ort_value
from .map_buffers import ChangeMapBuffers
from .scratch_buffers import ScratchBuffers, StatelessPlan
from .state_arena import StateArena
from .stream_state import StreamState
from .stream_stats import count_node_flops


class StateBinder:
    """One session's way of binding its streams' state: the model's state entries and maps, where the state lives."""

    def __init__(self, session: ort.InferenceSession, state_entries: Sequence[StateEntry],
                 empty_state: Mapping[str, np.ndarray], map_outputs: Mapping[str, str], node_info: Mapping[str, dict],
                 present_names: set[str], state_device: str, state_device_id: int,
                 stateless_plan: Callable[[], StatelessPlan]):
        self._session = session
        self._state_entries = list(state_entries)
        self._empty_state = empty_state
        self._map_outputs = dict(map_outputs)  # node -> its map output, in metadata order
        self._map_nodes = list(self._map_outputs)
        self._node_info = node_info
        self._present_names = present_names
        self._state_device, self._state_device_id = state_device, state_device_id
        self._stateless_plan = stateless_plan

    def bind_new_state(self, state: StreamState, input_shapes: tuple) -> StreamBinding:
        """First run of a state: empty state in (or what load_state() gave); the present outputs and the change
        maps go to the buffers of this mode's last binding at these input shapes, else ORT allocates them. A
        stateless binding's past state stays empty for as long as it lives."""
        binding = StreamBinding(self._session)
        order = []
        loaded = state.loaded if state.mode == "delta" else {}
        spare = state.spare_outputs.get(state.mode)
        state.prepared = spare if spare is not None and spare.input_shapes == input_shapes else None
        for entry in self._state_entries:
            binding.public.bind_cpu_input(entry.past, loaded.get(entry.past, self._empty_state[entry.past]))
            if state.prepared is not None:
                binding.public.bind_ortvalue_output(entry.present, state.prepared.values[entry.present])
            else:
                binding.public.bind_output(entry.present, self._state_device, self._state_device_id)
            order.append(entry.present)
        for k, output in enumerate(self._map_outputs.values()):
            if state.prepared is not None:
                binding.public.bind_ortvalue_output(output, state.prepared.maps.values[k])
            else:
                binding.public.bind_output(output, "cpu")
            order.append(output)
        state.binding, state.output_index, state.model_outputs = binding, {n: i for i, n in enumerate(order)}, ()
        return binding

    def keep_state_bound(self, state: StreamState, outputs) -> None:
        """After the first run: each state buffer becomes both its past input and its present output, and each
        map buffer stays bound to its output, for every later run of this state."""
        public, index = state.binding.public, state.output_index
        stateless = state.mode == "stateless"
        if state.prepared is not None:  # the run wrote into a spare's buffers: they stay bound
            self._keep_spare_bound(state, stateless)
            return
        first = [as_ort_value(outputs[index[entry.present]]) for entry in self._state_entries]
        if stateless:  # the outputs go to scratch shared as the graph allows; the past state stays empty
            written = {entry.present: value.numpy() for entry, value in zip(self._state_entries, first)}
            state.scratch = ScratchBuffers(self._stateless_plan().sharing, written)
            first = [state.scratch.values[entry.present] for entry in self._state_entries]
        elif self._state_device == "cpu" and first:
            # The state moves into one block of huge pages (state_arena.py): ORT's own buffers are scattered pages
            state.arena = StateArena.holding([value.numpy() for value in first])
            first = [ort.OrtValue.ortvalue_from_numpy(view) for view in state.arena.views]
        values = {}
        for entry, value in zip(self._state_entries, first):
            values[entry.present] = value
            if not stateless:
                public.bind_ortvalue_input(entry.past, value)
            public.bind_ortvalue_output(entry.present, value)
        maps = ChangeMapBuffers([outputs[index[output]].numpy() for output in self._map_outputs.values()])
        for output, value in zip(self._map_outputs.values(), maps.values):
            public.bind_ortvalue_output(output, value)
        maps.record_into(state.last_fraction, state.fraction_sum)
        state.values, state.map_buffers = values, maps
        count_node_flops(state, self._map_nodes, self._node_info)

    def _keep_spare_bound(self, state: StreamState, stateless: bool) -> None:
        """`keep_state_bound` for a binding whose first run wrote into a spare's buffers."""
        spare, state.prepared = state.prepared, None
        del state.spare_outputs[state.mode]
        if not stateless:
            state.arena = spare.arena
            for entry in self._state_entries:
                state.binding.public.bind_ortvalue_input(entry.past, spare.values[entry.present])
        else:
            state.scratch = spare.scratch
        spare.maps.record_into(state.last_fraction, state.fraction_sum)
        state.values, state.map_buffers = spare.values, spare.maps
        count_node_flops(state, self._map_nodes, self._node_info)

    def model_outputs_to_bind(self, state: StreamState, requested: list[str]) -> tuple[str, ...]:
        """The requested model outputs that are not state (bound to a fresh buffer on every run). When they
        differ from the last run's, the output binding is brought in line first."""
        fresh = tuple(name for name in dict.fromkeys(requested) if name not in self._present_names)
        if fresh == state.model_outputs:
            return fresh
        if any(name not in fresh for name in state.model_outputs):
            # an output bound before and not asked for now would be written into the caller's buffer:
            # start the output binding again with the state and the maps only
            public = state.binding.public
            public.clear_binding_outputs()
            order = []
            for entry in self._state_entries:
                public.bind_ortvalue_output(entry.present, state.values[entry.present])
                order.append(entry.present)
            for output, value in zip(self._map_outputs.values(), state.map_buffers.values):
                public.bind_ortvalue_output(output, value)
                order.append(output)
            state.output_index = {n: i for i, n in enumerate(order)}
        for name in fresh:
            state.output_index.setdefault(name, len(state.output_index))  # ORT lists outputs as first bound
        state.model_outputs = fresh
        return fresh
