"""The Faust app and its stages: thin stream shells over the functional cores."""
