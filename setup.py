"""Ships lfkit-autoload.pth at the wheel's root so every interpreter of the environment imports lfkit.

pyproject.toml holds all metadata; this file only adds the build step that setuptools
has no declarative way to express: a file placed beside the packages in site-packages,
in both regular and editable (PEP 660) installs.
"""

from pathlib import Path

from setuptools import Command, setup
from setuptools.command.build import build

PTH_NAME = "lfkit-autoload.pth"
# site.py executes a .pth line that starts with "import". Checking LFKIT_AUTOLOAD here,
# before lfkit is imported, keeps an opted-out interpreter free of lfkit entirely.
PTH_TEXT = (
    'import os; os.environ.get("LFKIT_AUTOLOAD", "1").strip().lower() in {"0", "false", "no", "off"}'
    ' or __import__("lfkit._autoload")\n'
)


class build_autoload_pth(Command):
    description = "write lfkit-autoload.pth beside the packages"
    user_options = []

    def initialize_options(self):
        self.build_lib = None
        self.editable_mode = False

    def finalize_options(self):
        self.set_undefined_options("build_py", ("build_lib", "build_lib"))

    def run(self):
        if self.editable_mode:
            # editable_wheel zips the install_lib folder (the unpacked wheel) as is;
            # build_lib is a throw-away folder in that mode.
            target = Path(self.get_finalized_command("install").install_lib)
        else:
            target = Path(self.build_lib)
        target.mkdir(parents=True, exist_ok=True)
        (target / PTH_NAME).write_text(PTH_TEXT)

    def get_outputs(self):
        return [str(Path(self.build_lib) / PTH_NAME)]

    def get_output_mapping(self):
        return {}

    def get_source_files(self):
        return []


build.sub_commands = [*build.sub_commands, ("build_autoload_pth", None)]

setup(cmdclass={"build_autoload_pth": build_autoload_pth})
