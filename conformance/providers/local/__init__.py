"""The embedded reference mesh: real Envoy sidecars and probe processes on 127.0.0.0/8."""

# Nothing is imported here: the registry names the provider class and its Settings by module, so reading every
# provider's settings (the CLI's and pytest's options) does not import any provider.
