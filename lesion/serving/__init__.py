"""Serving: one predict interface over several backends (:mod:`lesion.serving.backends`), the Ray Serve model
server (:mod:`lesion.serving.server`) and its client (:mod:`lesion.serving.client`), Ray Data evaluation
(:mod:`lesion.serving.batch`) and the ``lesion evaluate cls`` command (:mod:`lesion.serving.evaluate_cls`).

This package's ``__init__`` imports nothing, so that a client of a server (e.g. the dashboard's sidebar) does not
import PyTorch.
"""
