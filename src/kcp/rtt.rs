//! `ikcp_update_ack`: the RTT estimator and the retransmission timeout.

use super::{Kcp, RTO_MAX};

impl Kcp {
    pub(super) fn update_ack(&mut self, rtt: i32) {
        self.rx_last = rtt;
        if self.rx_srtt == 0 {
            self.rx_srtt = rtt;
            self.rx_rttval = rtt / 2;
        } else {
            let delta = (rtt as i64 - self.rx_srtt as i64).abs();
            self.rx_rttval = ((3 * self.rx_rttval as i64 + delta) / 4) as i32;
            self.rx_srtt = ((7 * self.rx_srtt as i64 + rtt as i64) / 8) as i32;
            if self.rx_srtt < 1 {
                self.rx_srtt = 1;
            }
        }
        // ikcp compares the unsigned interval with the signed 4*rttval as unsigned values.
        let var = (self.rx_rttval as u32).wrapping_mul(4);
        let rto = (self.rx_srtt as u32).wrapping_add(self.interval.max(var)) as i32;
        // `_ibound_(minrto, rto, RTO_MAX)`, where ikcp's RTO_MAX is unsigned.
        let lo = rto.max(self.rx_minrto);
        self.rx_rto = if (lo as u32) < RTO_MAX as u32 {
            lo
        } else {
            RTO_MAX
        };
    }
}
