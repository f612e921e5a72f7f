"""The hub's access control: admission, bans, the operator, and replay protection."""

from __future__ import annotations

from coordinator.hub_state import HubState, Outbox, PermissionDeniedError
from coordinator.models import Study, StudyState
from tunefleet.errors import InvalidInputError, NotFoundError

MAX_REASON_CHARS = 500  # an operator's reason for a ban, shown with every listing of access

__all__ = ["AccessMixin"]


class AccessMixin(HubState):
    """Who may do what. Part of :class:`coordinator.hub.Hub`."""

    def accept(self, key_id: str, seq: int) -> None:
        """Refuse a replayed or reordered envelope of ``key_id``; record ``seq`` durably."""
        with self.store.atomic():
            self.guard.check(key_id, seq)

    def _banned(self, key_id: str) -> str | None:
        if key_id not in self.banned:  # in-memory view of the access table's bans
            return None
        row = self.store.get_access(key_id)
        return row["reason"] if row is not None and row["state"] == "banned" else None

    def _refuse_banned(self, key_id: str) -> None:
        reason = self._banned(key_id)
        if reason is not None:
            raise PermissionDeniedError(f"key {key_id} is banned: {reason}")

    def check_researcher(self, key_id: str) -> None:
        """Raise :class:`PermissionDeniedError` unless ``key_id`` may submit and upload."""
        self._refuse_banned(key_id)
        if self.open_admission or key_id == self.operator_key_id:
            return
        row = self.store.get_access(key_id)
        if row is None or row["state"] != "admitted":
            raise PermissionDeniedError(
                f"researcher key {key_id} is not admitted; the operator admits it with "
                f"`coordinator admit {key_id}`"
            )

    def check_node(self, node_id: str) -> None:
        reason = self._banned(node_id)
        if reason is not None:
            raise PermissionDeniedError(f"node {node_id} is banned: {reason}")

    def check_reader(self, key_id: str, study_id: str | None = None) -> None:
        """Raise unless ``key_id`` may read ``study_id``: its owner or the operator, not banned.
        With ``None``: may list studies (a key sees only its own). Admission is not needed: it
        governs what costs the pool (submitting, uploading), and a study's owner was admitted,
        or the coordinator was open, when it submitted, so it can still follow its study after
        a restart without ``--open``."""
        self._refuse_banned(key_id)
        if study_id is not None:
            self.owned_study(key_id, study_id)

    def owned_study(self, key_id: str, study_id: str) -> Study:
        """``study_id``'s study when ``key_id`` owns it or is the operator's. Otherwise
        :class:`NotFoundError` with one message whether the study exists or not, so that no
        key learns which study ids other researchers hold."""
        try:
            study = self.store.get_study(study_id)
        except NotFoundError:
            study = None
        if study is None or key_id not in (study.owner_key_id, self.operator_key_id):
            raise NotFoundError(
                f"study {study_id!r} does not exist or is not yours: only its owner or the "
                "operator may read or stop it"
            )
        return study

    def check_operator(self, key_id: str) -> None:
        if self.operator_key_id is None or key_id != self.operator_key_id:
            raise PermissionDeniedError("only the operator key may do this")

    def change_access(self, signer: str, key_id: str, action: str, reason: str
                      ) -> tuple[dict[str, object], Outbox, list[str], int]:
        """Admit, ban or unban a key. Returns the entry, messages to send, the nodes whose
        sessions must end and the number of studies stopped."""
        self.check_operator(signer)
        if action not in ("admit", "ban", "unban"):
            raise InvalidInputError("action", action, "must be admit, ban or unban")
        if len(key_id) != 32 or any(c not in "0123456789abcdef" for c in key_id):
            raise InvalidInputError("key_id", key_id, "must be a 32-character hex key id")
        if not isinstance(reason, str) or len(reason) > MAX_REASON_CHARS:
            raise InvalidInputError("reason", reason,
                                    f"must be text of at most {MAX_REASON_CHARS} characters")
        if key_id == self.operator_key_id and action == "ban":
            raise InvalidInputError("key_id", key_id, "is the operator's own key")
        now = self.clock()
        outbox: Outbox = []
        end_nodes: list[str] = []
        stopped = 0
        with self._unit():  # memory below changes only once the store has
            if action == "unban":
                if key_id in self.banned:  # an admitted key stays admitted
                    self.store.remove_access(key_id)
            else:
                state = "admitted" if action == "admit" else "banned"
                self.store.set_access(key_id, state, reason or action, now)
            if action == "ban":
                for attempt in self.store.running_attempts(key_id):
                    outbox += self._lose(attempt, f"node banned: {reason or 'by the operator'}",
                                         now)
                for study in self.store.list_studies(StudyState.RUNNING):
                    if study.owner_key_id == key_id:
                        outbox += self.stop_study(study.id, signer, reason="owner banned")
                        stopped += 1
        if action == "ban":
            self.banned.add(key_id)
            if self.sessions.pop(key_id, None) is not None:
                end_nodes.append(key_id)
        else:
            self.banned.discard(key_id)
        entry = self.store.get_access(key_id) or {"key_id": key_id, "state": "none",
                                                  "reason": "", "changed_at": now}
        return entry, outbox + self.assign_all(), end_nodes, stopped

