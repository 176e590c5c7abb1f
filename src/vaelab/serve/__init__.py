"""The latent explorer (`vaelab serve RUN`): a small Flask app over one trained model."""

from vaelab.serve.app import Explorer, create_app, make_app_server, resolve_run, server_url

__all__ = ["Explorer", "create_app", "make_app_server", "resolve_run", "server_url"]
