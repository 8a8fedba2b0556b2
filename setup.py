"""Build hook: the wheel carries the top-level ``configs/*.yaml`` as ``speedpose/_configs/`` (see
:mod:`speedpose.config.shipped`), so that a non-editable install (``pip install .``, a wheel) still knows every
named config.  Everything else is declared in pyproject.toml."""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

CONFIGS = Path(__file__).resolve().parent / "configs"


class BuildPyWithConfigs(build_py):
    """``build_py`` plus a copy of ``configs/*.yaml`` into ``<build_lib>/speedpose/_configs``."""

    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return  # an editable install reads configs/ in the checkout itself
        target = Path(self.build_lib) / "speedpose" / "_configs"
        target.mkdir(parents=True, exist_ok=True)
        for path in sorted(CONFIGS.glob("*.yaml")):
            self.copy_file(str(path), str(target / path.name))

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        extra = [str(Path(self.build_lib) / "speedpose" / "_configs" / p.name) for p in sorted(CONFIGS.glob("*.yaml"))]
        return [*super().get_outputs(include_bytecode), *([] if getattr(self, "editable_mode", False) else extra)]


setup(cmdclass={"build_py": BuildPyWithConfigs})
