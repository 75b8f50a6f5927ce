"""The sharing rules, enforced on every record in transit: a pure function over a batch.

Applied after routing, to the copies routing chose. A record is refused whole when its resource
is unknown, not shared, on the negative list, or not from its authoritative source. Single copies
are withheld (and each refused) when the record's grade exceeds the destination's clearance.

Local delivery fans out: an unconditional record goes to the level's inbox and to every
subscribed department cleared for its grade; a conditional one only to subscribed departments
holding an approved, unexpired grant, projected to the granted information items.

The decision depends only on four header values and the routed outcome, so it is memoised on them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from node.core.catalog import Catalog, Resource
from node.core.envelope import MAX_GRADE, MIN_GRADE, Sharing, is_number
from node.core.grants import GrantBook
from node.core.outcome import Copy, Delivered, Direction, Outcome, Reason, Refused
from node.core.quoting import quoted

PolicyKey = tuple[bytes | None, bytes | None, bytes | None, bytes | None]
"""The raw ``cx-resource``, ``cx-source-region``, ``cx-source-dept`` and ``cx-grade`` values."""


@dataclass(frozen=True, slots=True)
class Clearance:
    """The highest grade each destination is cleared for."""

    parent: int = MAX_GRADE
    children: int = MAX_GRADE
    local: int = MAX_GRADE
    child: Mapping[str, int] = field(default_factory=dict)

    def of(self, copy: Copy) -> int:
        """Return the clearance of the copy's destination."""
        if copy.direction is Direction.UP:
            return self.parent
        if copy.direction is Direction.DOWN:
            return self.child.get(copy.region, self.children)
        return self.local


@dataclass(frozen=True, slots=True)
class NegativeList:
    """The negative list (负面清单): resources and source departments that may not be shared."""

    resources: frozenset[str] = frozenset()
    departments: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Department:
    """A department of this level that consumes resources on its own delivery topic."""

    code: str
    clearance: int
    subscriptions: frozenset[str]


@dataclass(frozen=True, slots=True)
class PolicySnapshot:
    """Everything the rules read, immutable; a reload swaps the whole snapshot."""

    catalog: Catalog
    negative: NegativeList = NegativeList()
    clearance: Clearance = Clearance()
    departments: tuple[Department, ...] = ()
    grants: GrantBook = field(default_factory=GrantBook)
    subscribers: Mapping[str, tuple[Department, ...]] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        by_resource: dict[str, list[Department]] = {}
        for department in self.departments:
            for code in department.subscriptions:
                by_resource.setdefault(code, []).append(department)
        subscribers = {code: tuple(depts) for code, depts in by_resource.items()}
        object.__setattr__(self, "subscribers", subscribers)


class Policy:
    """Applies a snapshot's rules to routed batches, with a bounded memo."""

    def __init__(self, snapshot: PolicySnapshot, memo_size: int = 8192) -> None:
        self.snapshot = snapshot
        self._memo: dict[tuple[PolicyKey, int], tuple[Delivered, Outcome]] = {}
        """(key, id of the routed outcome) -> (that outcome, kept alive so its id stays its
        own while memoised; the decision). The router hands out one outcome object per kind of
        route, so its identity is a cheaper key than its value, which dataclasses hash in
        Python; an equal outcome of another identity is merely decided again."""
        self._memo_size = memo_size

    def swap(self, snapshot: PolicySnapshot) -> None:
        """Use ``snapshot`` from the next decision on (grants changed, lists reloaded)."""
        self.snapshot = snapshot
        self._memo = {}

    def apply_batch(self, keys: Sequence[PolicyKey], routed: Sequence[Outcome]) -> list[Outcome]:
        """Return, per record, the routed outcome narrowed by the rules."""
        memo = self._memo
        outcomes: list[Outcome] = []
        for key, outcome in zip(keys, routed, strict=True):
            if isinstance(outcome, Refused):
                outcomes.append(outcome)
                continue
            memo_key = (key, id(outcome))
            found = memo.get(memo_key)
            if found is not None and found[0] is outcome:
                decided = found[1]
            else:
                if len(memo) >= self._memo_size:
                    memo.clear()
                decided = self.apply(key, outcome)
                memo[memo_key] = (outcome, decided)
            outcomes.append(decided)
        return outcomes

    def apply(self, key: PolicyKey, routed: Delivered) -> Outcome:
        """Decide for one routed record (not memoised)."""
        checked = self._check_record(key)
        if isinstance(checked, Refused):
            return checked
        resource, grade = checked
        snapshot = self.snapshot
        kept: list[Copy] = []
        withheld: list[tuple[Copy, Refused]] = []
        for copy in routed.copies:
            if copy.direction is Direction.LOCAL:
                self._deliver_locally(copy, resource, grade, kept, withheld)
                continue
            cleared = snapshot.clearance.of(copy)
            if grade > cleared:
                message = (
                    f"grade {grade} exceeds clearance {cleared} of {copy.direction} {copy.region}"
                )
                withheld.append((copy, Refused(Reason.GRADE, message)))
            else:
                kept.append(copy)
        if not kept:
            return (
                withheld[0][1]
                if len(withheld) == 1
                else Refused(
                    withheld[0][1].reason, "; ".join(refusal.message for _, refusal in withheld)
                )
            )
        if not withheld and tuple(kept) == routed.copies:
            return routed
        projects = any(copy.items is not None for copy in kept)
        return Delivered(tuple(kept), tuple(withheld), projects)

    def _check_record(self, key: PolicyKey) -> Refused | tuple[Resource, int]:
        """Apply the whole-record rules; return the refusal, or the resource and effective grade."""
        try:
            resource_code, region, dept, grade_text = (
                (value or b"").decode("ascii") for value in key
            )
        except UnicodeDecodeError:
            return Refused(Reason.BAD_ENVELOPE, "a cx-resource/source/grade header is not ASCII")
        if not is_number(grade_text) or not MIN_GRADE <= int(grade_text) <= MAX_GRADE:
            return Refused(Reason.BAD_ENVELOPE, f"header cx-grade: {quoted(grade_text)} is not 1-4")
        snapshot = self.snapshot
        resource = snapshot.catalog.get(resource_code)
        if resource is None:
            return Refused(
                Reason.UNKNOWN_RESOURCE, f"resource {quoted(resource_code)} is not in the catalog"
            )
        if resource.sharing is Sharing.NOT_SHARED:
            return Refused(
                Reason.NOT_SHARED, f"{resource.code} is not shared ({resource.legal_basis})"
            )
        if resource.code in snapshot.negative.resources:
            return Refused(
                Reason.NEGATIVE_LIST, f"resource {resource.code} is on the negative list"
            )
        if dept in snapshot.negative.departments:
            return Refused(
                Reason.NEGATIVE_LIST, f"source department {dept} is on the negative list"
            )
        if (region, dept) != (resource.source_region, resource.source_dept):
            return Refused(
                Reason.NOT_AUTHORITATIVE,
                f"{resource.code} comes only from {resource.source_dept}@{resource.source_region},"
                f" not {dept}@{region}",
            )
        return resource, max(int(grade_text), resource.grade)

    def _deliver_locally(
        self,
        copy: Copy,
        resource: Resource,
        grade: int,
        kept: list[Copy],
        withheld: list[tuple[Copy, Refused]],
    ) -> None:
        """Expand a local copy into the inbox copy and one copy per entitled department."""
        snapshot = self.snapshot
        conditional = resource.sharing is Sharing.CONDITIONAL
        before = len(kept)
        if not conditional:
            if grade > snapshot.clearance.local:
                message = f"grade {grade} exceeds clearance {snapshot.clearance.local} of the inbox"
                withheld.append((copy, Refused(Reason.GRADE, message)))
            else:
                kept.append(copy)
        for department in snapshot.subscribers.get(resource.code, ()):
            target = Copy(copy.direction, copy.region, copy.hops, department.code)
            if department.code in snapshot.negative.departments:
                message = f"consumer department {department.code} is on the negative list"
                withheld.append((target, Refused(Reason.NEGATIVE_LIST, message)))
            elif grade > department.clearance:
                message = (
                    f"grade {grade} exceeds clearance {department.clearance} of {department.code}"
                )
                withheld.append((target, Refused(Reason.GRADE, message)))
            elif not conditional:
                kept.append(target)
            elif (
                grant := snapshot.grants.active(resource.code, department.code, copy.region)
            ) is None:
                message = f"{department.code} holds no approved grant for {resource.code}"
                withheld.append((target, Refused(Reason.NO_GRANT, message)))
            else:
                items = grant.items or None
                kept.append(Copy(copy.direction, copy.region, copy.hops, department.code, items))
        if conditional and len(kept) == before and not snapshot.subscribers.get(resource.code):
            message = (
                f"{resource.code} is conditional and no department at {copy.region} subscribes"
            )
            withheld.append((copy, Refused(Reason.NO_GRANT, message)))
