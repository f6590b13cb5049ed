"""Policy file formats: podwall YAML (canonical); NeuVector and Kubernetes formats come later."""
