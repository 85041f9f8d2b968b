# Fixture stand-in for upstream vLLM's setup.py: same version logic and the
# same CMakeExtension + cmake_build_ext shape, CPU target only.
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools_scm import get_version

ROOT_DIR = Path(__file__).parent
logger = logging.getLogger(__name__)

VLLM_TARGET_DEVICE = os.getenv("VLLM_TARGET_DEVICE", "cuda")


def _is_cpu() -> bool:
    return VLLM_TARGET_DEVICE == "cpu"


def is_ccache_available() -> bool:
    return shutil.which("ccache") is not None


class CMakeExtension(Extension):
    def __init__(self, name: str, cmake_lists_dir: str = ".", **kwa) -> None:
        super().__init__(name, sources=[], py_limited_api=True, **kwa)
        self.cmake_lists_dir = os.path.abspath(cmake_lists_dir)


class cmake_build_ext(build_ext):
    # A dict of extension directories that have been configured.
    did_config: dict[str, bool] = {}

    def compute_num_jobs(self) -> int:
        # `num_jobs` is either the value of the MAX_JOBS environment variable
        # (if defined) or the number of CPUs available.
        num_jobs = os.getenv("MAX_JOBS")
        if num_jobs is not None:
            logger.info("Using MAX_JOBS=%s as the number of jobs.", num_jobs)
            return int(num_jobs)
        return len(os.sched_getaffinity(0))

    def configure(self, ext: CMakeExtension) -> None:
        if ext.cmake_lists_dir in cmake_build_ext.did_config:
            return
        cmake_build_ext.did_config[ext.cmake_lists_dir] = True

        cfg = os.getenv("CMAKE_BUILD_TYPE") or ("Debug" if self.debug else "RelWithDebInfo")
        cmake_args = [
            "-DCMAKE_BUILD_TYPE={}".format(cfg),
            "-DVLLM_TARGET_DEVICE={}".format(VLLM_TARGET_DEVICE),
        ]
        if os.getenv("VERBOSE"):
            cmake_args += ["-DCMAKE_VERBOSE_MAKEFILE=ON"]
        if is_ccache_available():
            cmake_args += [
                "-DCMAKE_C_COMPILER_LAUNCHER=ccache",
                "-DCMAKE_CXX_COMPILER_LAUNCHER=ccache",
            ]
        # Pass the python executable to cmake so it can find an exact match.
        cmake_args += ["-DVLLM_PYTHON_EXECUTABLE={}".format(sys.executable)]

        other_cmake_args = os.environ.get("CMAKE_ARGS")
        if other_cmake_args:
            cmake_args += other_cmake_args.split()

        subprocess.check_call(["cmake", ext.cmake_lists_dir, *cmake_args], cwd=self.build_temp)

    def build_extensions(self) -> None:
        # Ensure that CMake is present and working
        try:
            subprocess.check_output(["cmake", "--version"])
        except OSError as e:
            raise RuntimeError("Cannot find CMake executable") from e

        if not os.path.exists(self.build_temp):
            os.makedirs(self.build_temp)

        targets = []

        def target_name(s: str) -> str:
            return s.removeprefix("vllm.")

        for ext in self.extensions:
            self.configure(ext)
            targets.append(target_name(ext.name))

        num_jobs = self.compute_num_jobs()
        build_args = ["--build", ".", f"-j={num_jobs}", *[f"--target={name}" for name in targets]]
        subprocess.check_call(["cmake", *build_args], cwd=self.build_temp)

        # Install the libraries
        for ext in self.extensions:
            outdir = Path(self.get_ext_fullpath(ext.name)).parent.absolute()
            prefix = outdir
            for _ in range(ext.name.count(".")):
                prefix = prefix.parent
            install_args = ["cmake", "--install", ".", "--prefix", prefix, "--component", target_name(ext.name)]
            subprocess.check_call(install_args, cwd=self.build_temp)


def get_vllm_version() -> str:
    # Allow overriding the version. This is useful to build platform-specific
    # wheels (e.g. CPU, TPU) without modifying the source.
    if env_version := os.getenv("VLLM_VERSION_OVERRIDE"):
        print(f"Overriding VLLM version with {env_version} from VLLM_VERSION_OVERRIDE")
        os.environ["SETUPTOOLS_SCM_PRETEND_VERSION"] = env_version
        return get_version(write_to="vllm/_version.py")

    version = get_version(write_to="vllm/_version.py")
    sep = "+" if "+" not in version else "."  # dev versions might contain +

    if _is_cpu():
        if VLLM_TARGET_DEVICE == "cpu":
            version += f"{sep}cpu"
    else:
        raise RuntimeError("Unknown runtime environment (this fixture builds only VLLM_TARGET_DEVICE=cpu)")

    return version


ext_modules = []
if _is_cpu():
    ext_modules.append(CMakeExtension(name="vllm._C"))

setup(
    version=get_vllm_version(),
    ext_modules=ext_modules,
    cmdclass={"build_ext": cmake_build_ext} if len(ext_modules) > 0 else {},
)
