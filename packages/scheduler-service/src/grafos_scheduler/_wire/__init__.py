"""The v1 wire models and their strict parser, shared by the service and the remote side."""
