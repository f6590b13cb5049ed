"""Who is who: workloads, services, namespaces and nodes, and IP-to-identity resolution."""
