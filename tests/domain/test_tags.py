"""Tag rules (domain.tags): keys and values, 10 tags, merging, deleting, bind rules, the instance filter."""

from __future__ import annotations

import pytest

from opencbr.domain import tags as T
from opencbr.domain.errors import InvalidParameter


@pytest.mark.parametrize("key", ["env", "a-b_c", "数据库", "k" * 36])
def test_good_keys(key):
    assert T.check_key(f" {key} ") == key


@pytest.mark.parametrize("key", ["", "  ", "k" * 37, "a=b", "a/b", "a b", "a.b", "a*", None, 5])
def test_bad_keys(key):
    with pytest.raises(InvalidParameter):
        T.check_key(key)


@pytest.mark.parametrize("value,out", [(None, ""), ("", ""), (" v1.2 ", "v1.2"), ("v" * 43, "v" * 43)])
def test_good_values(value, out):
    assert T.check_value(value) == out


@pytest.mark.parametrize("value", ["v" * 44, "a/b", "a,b", "a|b", "<x>", 3])
def test_bad_values(value):
    with pytest.raises(InvalidParameter):
        T.check_value(value)


def test_lists_merge_and_delete():
    with pytest.raises(InvalidParameter):
        T.check_tag_list([])
    with pytest.raises(InvalidParameter):
        T.check_tag_list([{"key": "a", "value": "1"}, {"key": " a ", "value": "2"}])
    ten = [{"key": f"k{i}", "value": ""} for i in range(10)]
    assert len(T.check_tag_list(ten)) == 10
    with pytest.raises(InvalidParameter):
        T.check_tag_list(ten + [{"key": "x"}])
    assert T.merged([{"key": "a", "value": "1"}], [{"key": "a", "value": "2"}, {"key": "b", "value": ""}]) == [
        {"key": "a", "value": "2"}, {"key": "b", "value": ""}]
    with pytest.raises(InvalidParameter):
        T.merged(ten, [{"key": "x", "value": ""}])
    assert T.delete_keys([{"key": "a"}, {"key": "a"}, {"key": "a/b"}]) == ["a", "a", "a/b"]
    with pytest.raises(InvalidParameter):
        T.delete_keys([{"key": ""}])
    assert T.without(ten, ["k0", "absent"]) == ten[1:]


def test_bind_rules():
    assert T.check_bind_rules(None) == {} and T.check_bind_rules({"tags": []}) == {}
    with pytest.raises(InvalidParameter):
        T.check_bind_rules({"tags": [{"key": f"k{i}", "value": "v"} for i in range(6)]})
    rules = T.check_bind_rules({"tags": [{"key": "app", "value": "web"}, {"key": "tier", "value": "1"}]})
    assert T.matches_bind_rules(rules, [{"key": "tier", "value": "1"}])
    assert not T.matches_bind_rules(rules, [{"key": "app", "value": "db"}])
    assert not T.matches_bind_rules(rules, [])
    assert T.matches_bind_rules({}, [])


def test_instance_filter():
    f = T.TagFilter(tags=T.check_filter_tags([{"key": "app", "values": ["web", "*db"]}], "tags"))
    assert f.matches("x", [{"key": "app", "value": "web"}])
    assert f.matches("x", [{"key": "app", "value": "mydb1"}])
    assert not f.matches("x", [{"key": "app", "value": "cache"}])
    assert T.TagFilter(without_any_tag=True, tags={"app": []}).matches("x", [])
    assert not T.TagFilter(not_tags_any={"app": []}).matches("x", [{"key": "app", "value": "1"}])
    assert T.TagFilter(not_tags={"a": [], "b": []}).matches("x", [{"key": "a", "value": "1"}])
    assert T.TagFilter(name="").matches("", []) and not T.TagFilter(name="").matches("web", [])
    assert T.TagFilter(name="we").matches("web", [])
    for bad in ([], [{"key": "a"}, {"key": "a"}], [{"key": "a", "values": ["*"]}], [{"key": "a", "values": ["x", "x"]}]):
        with pytest.raises(InvalidParameter):
            T.check_filter_tags(bad, "tags")
