"""The WSGI entry point: `gunicorn -k gevent wsgi:app` (settings in gunicorn.conf.py)."""

from chatapp import create_app

app = create_app()
