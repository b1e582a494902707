"""Roofline results: the ``roofline.json`` schema and roofs (:mod:`.schema`), the analytic mode
(:mod:`.analytic`), the measured modes (:mod:`.measured`) and counter-vs-analytic cross-checks
(:mod:`.crosscheck`)."""
