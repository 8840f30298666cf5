"""nbgrader's configuration for the course's assignments (the teacher's course directory).

Run nbgrader from this folder (``cd course/teacher``): ``nbgrader generate_assignment <name>``,
``nbgrader autograde <name>``, ``nbgrader generate_feedback <name>``; see course/assignments/README.md.
"""

import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPOSITORY = HERE.parents[1]

# course.tooling (the calibrated checks and the preprocessors below) for nbgrader and for its kernels.
if str(REPOSITORY) not in sys.path:
    sys.path.insert(0, str(REPOSITORY))
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPOSITORY), os.environ.get("PYTHONPATH")) if p)
os.environ.setdefault("MPLBACKEND", "Agg")

c = get_config()  # noqa: F821 - provided by nbgrader

c.CourseDirectory.course_id = "lightning_prune"
c.CourseDirectory.root = str(HERE)
# The student versions go where students look: course/assignments/release/<name>/ (outside this folder).
c.CourseDirectory.release_directory = os.path.relpath(REPOSITORY / "course" / "assignments" / "release", HERE)
c.CourseDirectory.db_url = f"sqlite:///{HERE / 'gradebook.db'}"

# The notebooks' kernel is "python3"; jupyter_client runs it with the Python that runs nbgrader (the
# project's environment), so run nbgrader from that environment, its bin/ on PATH (nbgrader calls `alembic`).

# The assignments promise 2 minutes per cell (nbgrader's default is 30 s) and 10 minutes in all.
c.Execute.timeout = 120
c.LimitedExecute.total_timeout = 600

c.GenerateAssignment.preprocessors = [
    "nbgrader.preprocessors.IncludeHeaderFooter",
    "nbgrader.preprocessors.InstantiateTests",
    "nbgrader.preprocessors.LockCells",
    "nbgrader.preprocessors.ClearSolutions",
    "nbgrader.preprocessors.ClearOutput",
    "nbgrader.preprocessors.CheckCellMetadata",
    "nbgrader.preprocessors.ComputeChecksums",
    "nbgrader.preprocessors.SaveCells",
    "nbgrader.preprocessors.ClearHiddenTests",
    "nbgrader.preprocessors.ClearMarkScheme",
    "course.tooling.nbgrader_plugins.StripCustomMetadata",
    "nbgrader.preprocessors.ComputeChecksums",
    "nbgrader.preprocessors.CheckCellMetadata",
]
c.Autograde.autograde_preprocessors = [
    "course.tooling.nbgrader_plugins.LimitedExecute",
    "nbgrader.preprocessors.IgnorePattern",
    "nbconvert.preprocessors.ClearMetadataPreprocessor",
    "nbgrader.preprocessors.LimitOutput",
    "nbgrader.preprocessors.SaveAutoGrades",
    "nbgrader.preprocessors.AssignLatePenalties",
    "nbgrader.preprocessors.CheckCellMetadata",
]
c.GenerateFeedback.preprocessors = [
    "nbgrader.preprocessors.GetGrades",
    "course.tooling.nbgrader_plugins.HideHiddenTests",
    "nbconvert.preprocessors.CSSHTMLHeaderPreprocessor",
]
