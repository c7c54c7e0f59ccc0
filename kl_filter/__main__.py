from kl_filter.apps.cli import entry

entry()
