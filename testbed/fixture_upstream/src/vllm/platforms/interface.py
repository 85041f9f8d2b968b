# SPDX-License-Identifier: Apache-2.0
import enum


class PlatformEnum(enum.Enum):
    CUDA = enum.auto()
    CPU = enum.auto()
    UNSPECIFIED = enum.auto()


class Platform:
    _enum: PlatformEnum
    device_name: str
    device_type: str

    def is_cpu(self) -> bool:
        return self._enum == PlatformEnum.CPU

    def is_cuda(self) -> bool:
        return self._enum == PlatformEnum.CUDA


class UnspecifiedPlatform(Platform):
    _enum = PlatformEnum.UNSPECIFIED
    device_type = ""
