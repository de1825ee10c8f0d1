import torch

from cl_rl.targets import double_dqn_target, dqn_target


def _loop_targets(q_online, q_target, rewards, dones, gamma, double):
    out = []
    for i in range(q_online.shape[0]):
        a = int(torch.argmax(q_online[i] if double else q_target[i]))
        out.append(float(rewards[i, 0] + (1 - dones[i, 0]) * gamma * q_target[i, a]))
    return torch.tensor(out).unsqueeze(1)


def test_targets_match_a_per_sample_loop():
    torch.manual_seed(0)
    q_online, q_target = torch.randn(16, 18), torch.randn(16, 18)
    rewards, dones = torch.randn(16, 1), (torch.rand(16, 1) < 0.3).float()
    assert torch.allclose(
        double_dqn_target(q_online, q_target, rewards, dones, 0.99),
        _loop_targets(q_online, q_target, rewards, dones, 0.99, double=True),
    )
    assert torch.allclose(
        dqn_target(q_target, rewards, dones, 0.99),
        _loop_targets(q_online, q_target, rewards, dones, 0.99, double=False),
    )


def test_double_dqn_decouples_selection_from_evaluation():
    q_online = torch.tensor([[0.0, 5.0]])
    q_target = torch.tensor([[3.0, 1.0]])
    r, d = torch.zeros(1, 1), torch.zeros(1, 1)
    assert double_dqn_target(q_online, q_target, r, d, 1.0).item() == 1.0  # online picks action 1
    assert dqn_target(q_target, r, d, 1.0).item() == 3.0  # max over the target
