"""The one place a request is sent local, cloud or down the cascade.

Rules come first (forced tags, capabilities the local model lacks, prompt length, budget), then
the policy mode: ``cloud``/``local`` always pick one side, ``route`` thresholds the classifier's
P(local answer acceptable), ``cascade`` always tries local and escalates on low confidence, and
``hybrid`` pre-routes the clear cases and cascades the uncertain middle band.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol

from router._gateway.validation import prompt_text
from router.errors import BudgetExceeded, InvalidRequest
from router.types import ChatRequest

if TYPE_CHECKING:
    from router.policy import RoutingPolicy

Choice = Literal["local", "cloud", "cascade"]

ROUTE_TAG = "route"
"""``metadata={"route": "cloud"}`` (or ``"local"``) forces a route for one request."""


class Scorer(Protocol):
    def predict_proba(self, X: Sequence[str]):  # noqa: N803 - scikit-learn naming
        ...


@dataclass(frozen=True)
class Decision:
    """Where a request goes and why."""

    route: Choice
    reason: str
    score: float | None = None
    cloud_allowed: bool = True
    """False when a rule, the mode or the budget pinned the request to the local model: then no
    failure, escalation or cache entry may hand it a cloud answer or send it to the cloud."""

    @property
    def backends(self) -> tuple[str, ...]:
        """The backends whose answers this request may get, in the order they are tried."""
        if self.route == "cascade":
            return ("local", "cloud")
        return (self.route,)


def _pinned_local(reason: str, score: float | None = None) -> Decision:
    return Decision("local", reason, score, cloud_allowed=False)


class Decider:
    """Applies a ``RoutingPolicy`` to requests.

    >>> decider = Decider(policy, classifier=clf, cloud_spend_today=lambda: 0.0)
    >>> decider.decide(request)
    Decision(route='local', reason='score>=0.50', score=0.83)
    """

    def __init__(
        self,
        policy: RoutingPolicy,
        *,
        classifier: Scorer | None = None,
        cloud_spend_today: Callable[..., float] = lambda tenant=None: 0.0,
    ) -> None:
        self.policy = policy
        self.classifier = classifier
        self._spend = cloud_spend_today

    def score(self, request: ChatRequest) -> float | None:
        if self.classifier is None:
            return None
        return float(self.classifier.predict_proba([prompt_text(request)])[0][1])

    def decide(self, request: ChatRequest) -> Decision:
        """Where ``request`` goes; the local-only extensions must end up local.

        Raises:
            InvalidRequest: ``logprobs`` or a closed answer set on a request not routed local.
            BudgetExceeded: The daily budget is spent and the policy says ``fail``.
        """
        decision = self._decide(request)
        if decision.route != "local" and (request.logprobs or request.allowed_answers):
            param = "logprobs" if request.logprobs else "structured_outputs"
            raise InvalidRequest(
                f"{param} is answered by the local model only, and this request was routed "
                f"to {decision.route} ({decision.reason}); pin it local "
                f"(metadata={{'{ROUTE_TAG}': 'local'}}, or the local model's name on "
                "hybridgate serve)",
                param=param,
            )
        return decision

    def _decide(self, request: ChatRequest) -> Decision:
        policy = self.policy
        rules = policy.rules
        tags = request.metadata
        forced = tags.get(ROUTE_TAG)
        tag_values = set(tags.values()) | set(tags)
        # Pins to the local model come first: a private prompt stays on the machine even when
        # it also carries a cloud tag, tools, or a prompt too long for the local model (then
        # the local backend refuses it, and the caller gets that error). After the tags, the
        # caller's per-request metadata.route, then the policy's mode: local.
        local_tags = sorted(tag_values & set(rules.force_local_tags))
        if local_tags:
            return _pinned_local(f"rule:forced_local(tag:{local_tags[0]})")
        if forced == "local":
            return _pinned_local(f"rule:forced_local(metadata.{ROUTE_TAG})")
        if forced == "cloud":  # the caller's explicit choice for this one request
            return Decision("cloud", "rule:forced_cloud")
        if policy.mode == "local":
            return _pinned_local("policy:local")
        if tag_values & set(rules.force_cloud_tags):
            return Decision("cloud", "rule:forced_cloud")
        if request.tools and rules.cloud_if_tools:
            return Decision("cloud", "rule:tools")
        if request.response_format and rules.cloud_if_response_format:
            return Decision("cloud", "rule:response_format")
        if policy.mode == "cloud":
            return self._budget_checked(Decision("cloud", "policy:cloud"), request)
        served = rules.local_classes
        if served is not None and _traffic_class(request) not in served:
            # The adapter never cleared its floor on this class (or has not earned traffic).
            return self._budget_checked(Decision("cloud", "rule:class_not_served"), request)
        if _approx_tokens(request) > policy.max_local_prompt_tokens:
            return self._budget_checked(Decision("cloud", "rule:prompt_too_long"), request)
        if policy.mode == "cascade":
            return Decision("cascade", "policy:cascade")

        score = self.score(request)
        t = policy.thresholds
        if policy.mode == "route":
            if score is None:
                decision = Decision("cloud", "no_classifier")
            elif score >= t.route:
                decision = Decision("local", f"score>={t.route:.2f}", score)
            else:
                decision = Decision("cloud", f"score<{t.route:.2f}", score)
        else:  # hybrid
            if score is None:
                decision = Decision("cascade", "no_classifier:cascade")
            elif score >= t.hybrid_high:
                decision = Decision("local", f"score>={t.hybrid_high:.2f}", score)
            elif score < t.hybrid_low:
                decision = Decision("cloud", f"score<{t.hybrid_low:.2f}", score)
            else:
                decision = Decision("cascade", "score:uncertain", score)
        return self._budget_checked(decision, request)

    def _budget_checked(self, decision: Decision, request: ChatRequest) -> Decision:
        """Once the daily cloud budget (the policy's, or the tenant's own) is spent, go local or
        fail, as the policy says."""
        budget = self.policy.budget
        if decision.route == "local":
            return decision
        spent = None
        if budget.daily_usd is not None and self._spend() >= budget.daily_usd:
            spent = (f"daily cloud budget of ${budget.daily_usd:.2f}", "budget.daily_usd")
        tenant = request.tenant
        own = tenant.daily_usd if tenant is not None else None
        if spent is None and own is not None and self._spend(tenant.name) >= own:
            spent = (
                f"tenant {tenant.name!r}'s daily cloud budget of ${own:.2f}",
                "its daily_usd in the keys file",
            )
        if spent is None:
            return decision
        if budget.on_exceeded == "fail":
            raise BudgetExceeded(
                f"{spent[0]} is spent; requests that need the cloud fail until midnight "
                f"({budget.timezone}) or until {spent[1]} is raised"
            )
        return _pinned_local("budget:exhausted", decision.score)


def _traffic_class(request: ChatRequest) -> str:
    """The key the promotion gate judged this request's class under (its system prompt)."""
    from local_models.answer_sets import traffic_class  # imported only when classes are set

    return traffic_class(request.messages)


def _approx_tokens(request: ChatRequest) -> int:
    """~4 characters per token: good enough to catch prompts far beyond the context window.

    An estimate on purpose: the decision runs before (and without) the local tokenizer, and a
    prompt beyond the engine's context window is refused there (``max_context_tokens``)."""
    return sum(len(m.get("content") or "") for m in request.messages) // 4 + 4 * len(
        request.messages
    )
