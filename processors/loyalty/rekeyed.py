"""Commands that come back from the code partitions (referral rewards, coupon decisions) and
the claims sent to them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from processors.loyalty import campaigns, tiers
from processors.loyalty import notifications as n
from processors.loyalty.campaigns import Award, Claim, Skip
from processors.loyalty.envelope import as_json, command, uid

if TYPE_CHECKING:
    from processors.loyalty.engine import Output


class Rekeyed:
    """Mixin of `engine.Step`."""

    def referral_reward(self, cmd: dict) -> Output:
        payload = as_json(cmd.get("payload"))
        role = payload.get("role", "referrer")
        accs, applied = [], []
        held = 0
        for c in self.program.campaigns:
            if c.kind != "referral" or not c.enabled or not c.referral:
                continue
            amount = c.referral.referrer_points if role == "referrer" else c.referral.referee_points
            if amount <= 0 or campaigns.eligible_dates(c, cmd) or self._limited(c, cmd):
                continue
            award = Award(
                c.id,
                "referral",
                c.reward_id,
                amount,
                f"referral:{role}",
                str(amount),
                info={"role": role, "referee": payload.get("referee")},
            )
            mult = tiers.multiplier(self.program, self.state.get("tier"))
            if self._hold(cmd, award, mult, len(accs) + held):  # budgeted: decided on its partition
                held += 1
                continue
            line = self._credit(cmd, award, mult, len(accs) + held)
            if line:
                accs.append(line)
                applied.append(award.explain())
        if accs:
            self.notify(cmd["id"], n.CUSTOMER_ACCUMULATION, n.lines(self.cid, accs))
        self._upgrade(cmd)
        res = self.result(cmd, "RESOLVED", rules_applied=applied, accumulations=accs)
        self.remember(cmd["id"], res, "RESOLVED")
        return self.finish()

    def _limited(self, c: Any, cmd: dict) -> bool:
        count = self.state.get("campaigns", {}).get(c.id, {}).get("count", 0)
        over = c.per_customer_limit is not None and count >= c.per_customer_limit
        return over or bool(campaigns.period_capped(c, cmd, self.state)) or self.budget.exhausted(c)

    def coupon_decision(self, cmd: dict) -> Output:
        payload = as_json(cmd.get("payload"))
        campaign = next((c for c in self.program.campaigns if c.id == payload.get("campaign_id")), None)
        code = cmd.get("coupon_code") or ""
        if cmd["kind"] == "COUPON_REJECTED" or campaign is None:
            self.result(cmd, "REJECTED", payload.get("reason") or "coupon not available")
            return self.finish()
        act = self.activation(cmd, payload.get("properties") or {})
        outcome = campaigns.formula_award(campaign, act, {"code": code})
        if isinstance(outcome, Skip):
            self.result(cmd, "FAILED", outcome.reason)
            return self.finish()
        mult = tiers.multiplier(self.program, self.state.get("tier"))
        held = self._hold(cmd, outcome, mult, 0)  # a budgeted coupon: decided on its partition
        line = None if held else self._credit(cmd, outcome, mult, 0)
        accs = [line] if line else []
        if accs:
            self.notify(cmd["id"], n.CUSTOMER_ACCUMULATION, n.lines(self.cid, accs))
        self._upgrade(cmd)
        applied = [] if held else [outcome.explain()]
        res = self.result(cmd, "RESOLVED", rules_applied=applied, accumulations=accs)
        self.remember(cmd["id"], res, "RESOLVED")
        return self.finish()

    def _claim(self, event: dict, claim: Claim, props: dict) -> None:
        cmd = command(
            "COUPON_CLAIM",
            self.cid,
            event["type"],
            self.now,
            id=uid("claim", claim.code, event["id"]),
            coupon_code=claim.code,
            target_event_id=event["id"],
            payload={"campaign_id": claim.campaign_id, "properties": props},
        )
        self.out.commands.append(("coupons.claims", claim.code, cmd))
