"""WSGI entry point: `gunicorn wsgi:app`, `flask --app wsgi ...`."""

from wxapp_backend import create_app

app = create_app()
