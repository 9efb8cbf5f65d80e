from django.apps import AppConfig


class TasksAppConfig(AppConfig):
    name = "tasks_app"
    verbose_name = "Tasks"

    def ready(self) -> None:
        from django.conf import settings

        if settings.TASK_EXECUTION == "celery":  # every process dispatches runs through the broker
            from tasks_app.celery_executor import register_executor

            register_executor()
