"""诉求 (appeals): intake, workflow, SLA calendar, classification, metrics and reports."""

# The chat intake (handlers/appeal_intake.py) is one of the bot's plug-in intents; handlers.build_router()
# imports the modules listed in handlers.PLUGINS. Registering it here runs before the webhook builds its
# router (models are imported first in create_app).
try:
    import handlers as _handlers
except ImportError:  # pragma: no cover - the chatbot package is optional for the appeals domain
    _handlers = None
if _handlers is not None and "handlers.appeal_intake" not in _handlers.PLUGINS:
    _handlers.PLUGINS.append("handlers.appeal_intake")
