"""The Gravity view: an Airflow plugin with the run history's charts and the dead letter, under ``/gravity``."""
