"""graph_passes/scratch_sharing.py: which state outputs a stateless run may write into one buffer
(docs/design.md#stateless-runs). Small hand-built graphs; the ops' types matter only where ORT may alias."""
from __future__ import annotations

import onnx
import pytest
from onnx import TensorProto, helper

from deltaonnx.graph_passes.protocol import DOMAIN
from deltaonnx.graph_passes.scratch_sharing import ScratchSharing, check_groups


def _graph(nodes, outputs=("out",)) -> onnx.GraphProto:
    return helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, None)],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs])


def _node(op, inputs, output, **attributes):
    return helper.make_node(op, list(inputs), [output], name=output, **attributes)


def _groups(graph, values, sizes=None):
    sharing = ScratchSharing(graph, values)
    groups = sharing.groups(sizes or {v: 100 for v in values})
    check_groups(sharing, groups)
    return {frozenset(g) for g in groups}


def test_a_chain_reuses_every_other_buffer():
    nodes = [_node("Relu", ["x"], "a"), _node("Relu", ["a"], "b"), _node("Relu", ["b"], "c"), _node("Relu", ["c"], "d"),
             _node("Relu", ["d"], "out")]
    assert _groups(_graph(nodes), ["a", "b", "c", "d"]) == {frozenset("ac"), frozenset("bd")}


def test_a_skip_connection_keeps_its_source_alive_until_read():
    # a is read by c (a residual sum): c may not overwrite it; d may
    nodes = [_node("Relu", ["x"], "a"), _node("Relu", ["a"], "b"), _node("Add", ["b", "a"], "c"),
             _node("Relu", ["c"], "d"), _node("Relu", ["d"], "out")]
    groups = _groups(_graph(nodes), ["a", "b", "c", "d"])
    assert not any({"a", "c"} <= g for g in groups)
    assert any({"a", "d"} <= g for g in groups)


def test_readers_through_an_aliasing_reshape_count():
    # r is a Reshape of a: ORT may hand c a view of a's buffer, so a stays alive until c has run
    nodes = [_node("Relu", ["x"], "a"), _node("Relu", ["a"], "b"), _node("Reshape", ["a", "shape"], "r"),
             _node("Add", ["b", "r"], "c"), _node("Relu", ["c"], "out")]
    groups = _groups(_graph(nodes), ["a", "b", "c"])
    assert not any({"a", "c"} <= g for g in groups)


def test_a_value_returned_through_an_alias_shares_nothing():
    nodes = [_node("Relu", ["x"], "a"), _node("Identity", ["a"], "out"), _node("Relu", ["a"], "b"),
             _node("Relu", ["b"], "c"), _node("Relu", ["c"], "side")]
    sharing = ScratchSharing(_graph(nodes, outputs=("out", "side")), ["a", "b", "c"])
    assert sharing.exclusive == {"a"}
    assert [["a"]] == [g for g in sharing.groups({"a": 8, "b": 8, "c": 8}) if "a" in g]


def test_a_value_that_is_itself_a_model_output_shares_nothing():
    # c is a state output and the model's output "c" (convert keeps a model output's name on its Delta op)
    nodes = [_node("Relu", ["x"], "a"), _node("Relu", ["a"], "b"), _node("Relu", ["b"], "c"), _node("Relu", ["b"], "d"),
             _node("Add", ["c", "d"], "e"), _node("Relu", ["e"], "f"), _node("Relu", ["f"], "out")]
    sizes = {v: 8 for v in "abcdef"}
    sharing = ScratchSharing(_graph(nodes, outputs=("out", "c")), list(sizes), returned=["out", "c"])
    assert sharing.exclusive == {"c"}
    assert ["c"] in sharing.groups(sizes)


def test_a_subgraph_that_names_a_value_reads_it():
    then_branch = helper.make_graph([_node("Relu", ["a"], "t")], "then", [],
                                    [helper.make_tensor_value_info("t", TensorProto.FLOAT, None)])
    else_branch = helper.make_graph([_node("Relu", ["x"], "e")], "else", [],
                                    [helper.make_tensor_value_info("e", TensorProto.FLOAT, None)])
    nodes = [_node("Relu", ["x"], "a"), _node("Relu", ["a"], "b"), _node("Relu", ["b"], "c"),
             _node("If", ["cond"], "i", then_branch=then_branch, else_branch=else_branch),
             _node("Add", ["i", "c"], "d"), _node("Relu", ["d"], "out")]
    groups = _groups(_graph(nodes), ["a", "b", "c", "d"])
    assert any({"a", "d"} <= g for g in groups)
    # c follows a but not the If, which reads a inside its branch: c may not take a's buffer; d (after the If) may
    assert not any({"a", "c"} <= g for g in groups)


def test_independent_branches_never_share():
    # b and c have no order between them: ORT may run either first
    nodes = [_node("Relu", ["x"], "a"), _node("Relu", ["a"], "b"), _node("Relu", ["a"], "c"),
             _node("Add", ["b", "c"], "out")]
    sharing = ScratchSharing(_graph(nodes), ["b", "c"])
    assert not sharing.dead_before("b", "c") and not sharing.dead_before("c", "b")
    assert len(sharing.groups({"b": 4, "c": 4})) == 2


def test_the_order_nodes_are_listed_in_does_not_matter():
    nodes = [_node("Relu", ["x"], "a"), _node("Relu", ["a"], "b"), _node("Relu", ["b"], "c"), _node("Relu", ["c"], "d"),
             _node("Relu", ["d"], "out")]
    assert _groups(_graph(nodes[::-1]), ["a", "b", "c", "d"]) == {frozenset("ac"), frozenset("bd")}


def test_the_tightest_free_buffer_is_taken():
    # a (big) and b (small) are dead when d is written; d (small) takes b's buffer, e (big) a's
    nodes = [_node("Relu", ["x"], "a"), _node("Relu", ["a"], "b"), _node("Relu", ["b"], "c"), _node("Relu", ["c"], "d"),
             _node("Relu", ["d"], "e"), _node("Relu", ["e"], "out")]
    sizes = {"a": 1000, "b": 10, "c": 500, "d": 10, "e": 900}
    sharing = ScratchSharing(_graph(nodes), list(sizes))
    groups = sharing.groups(sizes)
    check_groups(sharing, groups)
    assert ["b", "d"] in groups and any(g[:1] == ["a"] and "e" in g for g in groups)


def test_check_groups_refuses_values_live_at_once():
    nodes = [_node("Relu", ["x"], "a"), _node("Relu", ["a"], "b"), _node("Relu", ["b"], "out")]
    sharing = ScratchSharing(_graph(nodes), ["a", "b"])
    with pytest.raises(ValueError, match="live at once"):
        check_groups(sharing, [["a", "b"]])


def test_a_cycle_is_refused():
    nodes = [_node("Relu", ["b"], "a"), _node("Relu", ["a"], "b"), _node("Relu", ["b"], "out")]
    with pytest.raises(ValueError, match="cycle"):
        ScratchSharing(_graph(nodes), ["a"])


def _delta_conv(x, z, output):
    """A DeltaConv reading x, its sum z (input 6), writing output (Y)."""
    return helper.make_node("DeltaConv", [x, "w", "", "", "", "", z, "mz"], [output], name=output, domain=DOMAIN)


def test_a_delta_conv_writes_its_sum_in_place_once_every_other_reader_ran():
    # a residual block: b = conv(a), c = conv(b) + a; c may be written over a (c's producer is a's last reader)
    nodes = [_node("Relu", ["x"], "a"), _node("Relu", ["a"], "b"), _delta_conv("b", "a", "c"),
             _node("Relu", ["c"], "out")]
    sharing = ScratchSharing(_graph(nodes), ["a", "b", "c"])
    assert sharing.in_place("a", "c") and not sharing.dead_before("a", "c")
    assert not sharing.in_place("b", "c") and not sharing.in_place("c", "a")
    groups = sharing.groups({"a": 100, "b": 100, "c": 100})
    check_groups(sharing, groups)
    assert any({"a", "c"} <= set(g) for g in groups)  # c goes to a's buffer, not to a free one


def test_no_sum_in_place_while_another_reader_may_run_after():
    # d reads a too and does not run before c in every order: a stays alive, c is not written over it
    nodes = [_node("Relu", ["x"], "a"), _node("Relu", ["a"], "b"), _delta_conv("b", "a", "c"),
             _node("Relu", ["a"], "d"), _node("Add", ["c", "d"], "out")]
    sharing = ScratchSharing(_graph(nodes), ["a", "b", "c", "d"])
    assert not sharing.in_place("a", "c")
    assert not any({"a", "c"} <= set(g) for g in sharing.groups({v: 100 for v in "abcd"}))


def test_no_sum_in_place_when_the_conv_reads_its_sum_another_way_too():
    nodes = [_node("Relu", ["x"], "a"), _delta_conv("a", "a", "c"), _node("Relu", ["c"], "out")]
    sharing = ScratchSharing(_graph(nodes), ["a", "c"])
    assert not sharing.in_place("a", "c")
    with pytest.raises(ValueError, match="live at once"):
        check_groups(sharing, [["a", "c"]])


def test_no_sum_in_place_for_other_ops_or_outputs():
    # an Add of the same shape is not a DeltaConv; the sum of a conv whose Y is not the value either
    nodes = [_node("Relu", ["x"], "a"), _node("Relu", ["a"], "b"), _node("Add", ["b", "a"], "c"),
             _node("Relu", ["c"], "out")]
    assert not ScratchSharing(_graph(nodes), ["a", "b", "c"]).in_place("a", "c")
