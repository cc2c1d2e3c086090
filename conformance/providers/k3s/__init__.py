"""k3s clusters in Docker through testcontainers, running Istio installed per Istio's multi-cluster guides
(``meshconf plan --provider k3s`` prints how)."""

# Nothing is imported here: the registry names the provider class and its Settings by module, so reading every
# provider's settings (the CLI's and pytest's options) does not import any provider.
