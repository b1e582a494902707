"""What people read: figures (:mod:`.plots`), ``report.md`` (:mod:`.report_md`) and terminal tables (:mod:`.tables`)."""
