"""TaskFlow decorators: ``@task.ray`` (registered through the provider info's ``task-decorators``)."""
