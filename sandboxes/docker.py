def docker_client():
    import docker
    return docker.from_env()
