"""Clusters you already have: kubeconfig contexts that run Istio; meshconf touches only meshconf-* namespaces."""

# Nothing is imported here: the registry names the provider class and its Settings by module, so reading every
# provider's settings (the CLI's and pytest's options) does not import any provider.
