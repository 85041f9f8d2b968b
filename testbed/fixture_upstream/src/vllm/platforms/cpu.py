# SPDX-License-Identifier: Apache-2.0
from .interface import Platform, PlatformEnum


class CpuPlatform(Platform):
    _enum = PlatformEnum.CPU
    device_name: str = "cpu"
    device_type: str = "cpu"
    dispatch_key: str = "CPU"

    @classmethod
    def compiled_isa(cls) -> tuple[str, ...]:
        from vllm import _C

        return _C.compiled_isa()
