"""Keep the student versions and any collected submissions out of pytest/nbval collection.

Only the teacher's source notebooks (``source/<name>/<name>.ipynb``, solutions and hidden tests
included) are executed by nbval; ``tests/test_grading.py`` grades them and the student versions.
"""

collect_ignore_glob = ["release/*", "submitted/*", "autograded/*", "feedback/*", "exchange/*"]
