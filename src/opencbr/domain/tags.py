"""Tag rules (the SDK's tag models state them): keys and values, at most 10 tags on a vault, unique keys,
and the filters of the resource-instances query. Also the bind rules of automatic association. Pure
functions; the services load the tags and store the results."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from opencbr.domain.errors import InvalidParameter

MAX_TAGS = 10
MAX_KEY, MAX_VALUE = 36, 43
#: A bind rule names 1 to 5 tags (VaultBindRules).
MAX_BIND_TAGS = 5
#: Filter tags (TagsReq): a key of at most 127 characters, at most 10 values of at most 255 each.
MAX_FILTER_KEY, MAX_FILTER_VALUES, MAX_FILTER_VALUE = 127, 10, 255
CODE = "BackupService.6210"

# Letters, digits, "-" and "_" (and CJK ideographs); a value may also hold ".".
_KEY_RE = re.compile(r"^[A-Za-z0-9_\-\u4e00-\u9fa5]+$")
_VALUE_RE = re.compile(r"^[A-Za-z0-9_\-.\u4e00-\u9fa5]*$")


def check_key(key: object) -> str:
    """A tag key: leading and trailing spaces dropped, then 1 to 36 letters, digits, "-" or "_"."""
    if not isinstance(key, str) or not key.strip():
        raise InvalidParameter("a tag key cannot be empty", code=CODE)
    key = key.strip()
    if len(key) > MAX_KEY or not _KEY_RE.match(key):
        raise InvalidParameter(f"tag key {key[:64]!r} must be 1 to {MAX_KEY} characters of letters, digits, "
                               "hyphens (-) or underscores (_)", code=CODE)
    return key


def check_value(value: object) -> str:
    """A tag value: spaces around dropped, then at most 43 letters, digits, "-", "_" or "." (may be empty)."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InvalidParameter("a tag value must be a string", code=CODE)
    value = value.strip()
    if len(value) > MAX_VALUE or not _VALUE_RE.match(value):
        raise InvalidParameter(f"tag value {value[:64]!r} must be at most {MAX_VALUE} characters of letters, "
                               "digits, hyphens (-), underscores (_) or periods (.)", code=CODE)
    return value


def check_tag_list(tags: object, *, limit: int = MAX_TAGS, what: str = "tags") -> list[dict[str, str]]:
    """A non-empty list of ``{key, value}`` with valid, distinct keys, at most ``limit`` of them."""
    if not isinstance(tags, list) or not tags:
        raise InvalidParameter(f"{what} must be a non-empty list", code=CODE)
    if len(tags) > limit:
        raise InvalidParameter(f"{what} hold at most {limit} tags", code=CODE)
    out: list[dict[str, str]] = []
    for t in tags:
        if not isinstance(t, Mapping):
            raise InvalidParameter(f"each of {what} needs a key and a value", code=CODE)
        key, value = check_key(t.get("key")), check_value(t.get("value"))
        if any(o["key"] == key for o in out):
            raise InvalidParameter(f"tag key {key!r} is given more than once", code=CODE)
        out.append({"key": key, "value": value})
    return out


def merged(existing: list[dict], new: list[dict]) -> list[dict[str, str]]:
    """``existing`` with ``new`` added: a key already there takes the new value. At most 10 in all."""
    out = [dict(t) for t in existing or []]
    for t in new:
        for o in out:
            if o["key"] == t["key"]:
                o["value"] = t["value"]
                break
        else:
            out.append(dict(t))
    if len(out) > MAX_TAGS:
        raise InvalidParameter(f"a vault has at most {MAX_TAGS} tags; it would have {len(out)}", code=CODE)
    return out


def delete_keys(tags: object) -> list[str]:
    """The keys of a batch delete: keys may repeat and are not checked against the character rules (a
    key that is not there is simply not deleted), but none may be empty."""
    if not isinstance(tags, list) or not tags:
        raise InvalidParameter("tags must be a non-empty list", code=CODE)
    keys = []
    for t in tags:
        key = t.get("key") if isinstance(t, Mapping) else None
        if not isinstance(key, str) or not key.strip():
            raise InvalidParameter("a tag key cannot be empty", code=CODE)
        keys.append(key.strip())
    return keys


def without(existing: list[dict], keys: Iterable[str]) -> list[dict[str, str]]:
    drop = set(keys)
    return [dict(t) for t in existing or [] if t["key"] not in drop]


# ------------------------------------------------------------------------------------ bind rules
def check_bind_rules(rules: object) -> dict:
    """VaultBindRules: ``{"tags": [{key, value}]}`` with 1 to 5 tags, or no tags (``{}``): every
    resource then matches."""
    if rules is None:
        return {}
    if not isinstance(rules, Mapping):
        raise InvalidParameter("bind_rules must be an object", code=CODE)
    tags = rules.get("tags")
    if tags is None or tags == []:
        return {}
    return {"tags": check_tag_list(tags, limit=MAX_BIND_TAGS, what="bind_rules.tags")}


def matches_bind_rules(rules: Mapping | None, resource_tags: list[dict] | None) -> bool:
    """Automatic association picks a resource that carries any one of the rule's tags (key and value
    equal); a vault without tag rules picks every resource."""
    wanted = (rules or {}).get("tags") or []
    if not wanted:
        return True
    have = {(t["key"], t.get("value", "")) for t in resource_tags or []}
    return any((t["key"], t.get("value", "")) in have for t in wanted)


# ------------------------------------------------------------------------------------ instance filters
@dataclass
class TagFilter:
    """The resource-instances query (``show_vault_resource_instances``): ``tags`` (every key, any of its
    values), ``tags_any`` (any key), ``not_tags`` (not every key), ``not_tags_any`` (none of the keys),
    ``without_any_tag`` (untagged only, the others ignored), ``name`` (the ``resource_name`` match)."""

    tags: dict[str, list[str]] = field(default_factory=dict)
    tags_any: dict[str, list[str]] = field(default_factory=dict)
    not_tags: dict[str, list[str]] = field(default_factory=dict)
    not_tags_any: dict[str, list[str]] = field(default_factory=dict)
    without_any_tag: bool = False
    name: str | None = None

    def matches(self, name: str, tags: list[dict] | None) -> bool:
        have = {t["key"]: t.get("value", "") for t in tags or []}
        if self.name is not None and not _name_matches(self.name, name):
            return False
        if self.without_any_tag:
            return not have
        if self.tags and not all(_has(have, k, v) for k, v in self.tags.items()):
            return False
        if self.tags_any and not any(_has(have, k, v) for k, v in self.tags_any.items()):
            return False
        if self.not_tags and all(_has(have, k, v) for k, v in self.not_tags.items()):
            return False
        if self.not_tags_any and any(_has(have, k, v) for k, v in self.not_tags_any.items()):
            return False
        return True


def _has(have: dict[str, str], key: str, values: list[str]) -> bool:
    """The tag ``key`` with one of ``values`` (no values: any value; ``*abc``: a value containing abc)."""
    if key not in have:
        return False
    if not values:
        return True
    value = have[key]
    return any(value == v or (v.startswith("*") and v[1:] in value) for v in values)


def _name_matches(wanted: str, name: str) -> bool:
    """``resource_name``: an empty value matches exactly (an empty name), another value matches a part."""
    return name == "" if wanted == "" else wanted in name


def check_filter_tags(items: object, what: str) -> dict[str, list[str]]:
    """TagsReq items: distinct keys (at most 10), each with at most 10 distinct values."""
    if items is None:
        return {}
    if not isinstance(items, list) or not items:
        raise InvalidParameter(f"{what} must be a non-empty list when given", code=CODE)
    if len(items) > MAX_TAGS:
        raise InvalidParameter(f"{what} hold at most {MAX_TAGS} keys", code=CODE)
    out: dict[str, list[str]] = {}
    for item in items:
        key = item.get("key") if isinstance(item, Mapping) else None
        if not isinstance(key, str) or not key.strip() or len(key.strip()) > MAX_FILTER_KEY:
            raise InvalidParameter(f"each of {what} needs a key of 1 to {MAX_FILTER_KEY} characters", code=CODE)
        key = key.strip()
        if key in out:
            raise InvalidParameter(f"key {key!r} is given more than once in {what}", code=CODE)
        values = item.get("values") or []
        if not isinstance(values, list) or len(values) > MAX_FILTER_VALUES:
            raise InvalidParameter(f"{what}: a key has at most {MAX_FILTER_VALUES} values", code=CODE)
        clean = []
        for v in values:
            if not isinstance(v, str) or len(v.strip()) > MAX_FILTER_VALUE or v.strip() == "*":
                raise InvalidParameter(f"{what}: a value is a string of at most {MAX_FILTER_VALUE} characters "
                                       "(and not just '*')", code=CODE)
            if v.strip() in clean:
                raise InvalidParameter(f"{what}: value {v.strip()!r} is given more than once", code=CODE)
            clean.append(v.strip())
        out[key] = clean
    return out
