"""诉求 (appeals): intake, workflow, SLA calendar, classification, metrics and reports."""
