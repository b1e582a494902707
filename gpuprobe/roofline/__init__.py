"""Roofline results along the flow: the ``roofline.json`` schema, roofs, bound and limiter (:mod:`.schema`); the
one per-op table -> points path (:mod:`.points`); the analytic mode (:mod:`.analytic`); the measured modes as
stages (:mod:`.plan` -> :mod:`.measured` sweep -> :mod:`.assemble` -> :mod:`.outputs`); counter-vs-analytic
cross-checks (:mod:`.crosscheck`)."""
