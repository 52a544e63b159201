import pytest
import torch
from torch import nn

from duda.errors import DudaError
from duda.uda import copy_parameters, disable_dropout, ema_alpha, ema_step, ema_update, make_ema_teacher


class TwoParams(nn.Module):
    def __init__(self, w: float, b: float) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.tensor([w]))
        self.b = nn.Parameter(torch.tensor(b))  # a 0-d parameter, as the reference special-cases
        self.register_buffer("running", torch.tensor([7.0]))


class SegformerDropPath(nn.Module):  # named like HF transformers' drop-path module
    def forward(self, x):
        return x


class WithNoise(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1)
        self.bn = nn.BatchNorm2d(4)
        self.drop = nn.Dropout2d(0.5)
        self.drop_path = SegformerDropPath()


def test_alpha_sequence_starts_at_zero_and_is_capped():
    assert ema_alpha(0) == 0.0
    assert ema_alpha(1) == 0.5
    assert ema_alpha(2) == pytest.approx(2 / 3)
    assert ema_alpha(9) == pytest.approx(0.9)
    assert ema_alpha(999, alpha=0.999) == pytest.approx(0.999)
    assert ema_alpha(5000, alpha=0.999) == 0.999
    assert ema_alpha(5000, alpha=0.99) == 0.99


def test_alpha_rejects_negative_step():
    with pytest.raises(DudaError, match="step"):
        ema_alpha(-1)


def test_update_on_two_parameter_model_matches_hand_calculation():
    teacher, student = TwoParams(1.0, 2.0), TwoParams(3.0, -2.0)
    student.running.fill_(100.0)
    ema_update(teacher, student, alpha=0.75)
    # 0.75*1 + 0.25*3 = 1.5 ; 0.75*2 + 0.25*(-2) = 1.0
    assert teacher.w.item() == pytest.approx(1.5)
    assert teacher.b.item() == pytest.approx(1.0)
    assert teacher.running.item() == 7.0  # buffers are not averaged
    assert student.w.item() == 3.0


def test_ema_step_copies_at_step_zero_then_averages():
    teacher, student = TwoParams(1.0, 2.0), TwoParams(3.0, -2.0)
    assert ema_step(teacher, student, step=0) == 0.0
    assert teacher.w.item() == 3.0 and teacher.b.item() == -2.0
    with torch.no_grad():
        student.w.fill_(5.0)
    assert ema_step(teacher, student, step=1) == 0.5
    assert teacher.w.item() == pytest.approx(4.0)  # 0.5*3 + 0.5*5
    with torch.no_grad():
        student.w.fill_(7.0)
    ema_step(teacher, student, step=2)
    assert teacher.w.item() == pytest.approx(2 / 3 * 4 + 1 / 3 * 7)


def test_copy_parameters_rejects_other_architecture():
    with pytest.raises(DudaError, match="shape"):
        copy_parameters(nn.Linear(2, 3), nn.Linear(3, 3))


def test_teacher_has_no_grad_and_dropout_droppath_off_bn_unchanged():
    student = WithNoise().train()
    teacher = make_ema_teacher(student)
    assert all(not p.requires_grad for p in teacher.parameters())
    assert all(p.requires_grad for p in student.parameters())
    assert not teacher.drop.training and not teacher.drop_path.training
    assert teacher.bn.training and teacher.training  # BN keeps the student's (train) mode
    assert student.drop.training and student.drop_path.training
    teacher.train()
    assert teacher.drop.training
    disable_dropout(teacher)
    assert not teacher.drop.training and teacher.bn.training
    x = torch.randn(2, 3, 4, 4)
    assert torch.equal(teacher.drop(x), x)
