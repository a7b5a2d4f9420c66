"""Management commands of the studio (python manage.py ...)."""
