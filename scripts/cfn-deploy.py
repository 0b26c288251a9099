#!/usr/bin/env python3
"""Test helper: deploys a CloudFormation template to the AWS endpoint in the environment
(moto, started by scripts/test) and prints, as JSON, the stack's status and outputs and
what the resources it created look like (the KMS key's description and policy, the IAM
role's trust policy). Used by keyhold-onboarding's tests; never by the product."""

import json
import sys
import time

import boto3


def main() -> int:
    template_path, stack, region = sys.argv[1], sys.argv[2], sys.argv[3]
    with open(template_path, encoding="utf-8") as f:
        body = f.read()
    cfn = boto3.client("cloudformation", region_name=region)
    cfn.create_stack(StackName=stack, TemplateBody=body, Capabilities=["CAPABILITY_IAM"])
    for _ in range(100):
        desc = cfn.describe_stacks(StackName=stack)["Stacks"][0]
        if not desc["StackStatus"].endswith("IN_PROGRESS"):
            break
        time.sleep(0.1)
    outputs = {o["OutputKey"]: o["OutputValue"] for o in desc.get("Outputs", [])}
    result = {"status": desc["StackStatus"], "outputs": outputs}
    if "KeyArn" in outputs:
        kms = boto3.client("kms", region_name=region)
        meta = kms.describe_key(KeyId=outputs["KeyArn"])["KeyMetadata"]
        result["key"] = {k: meta.get(k) for k in ("Arn", "KeySpec", "KeyUsage", "KeyState", "Origin", "MultiRegion")}
        result["key_policy"] = json.loads(kms.get_key_policy(KeyId=outputs["KeyArn"], PolicyName="default")["Policy"])
        result["rotation"] = kms.get_key_rotation_status(KeyId=outputs["KeyArn"])["KeyRotationEnabled"]
        # The key is usable: a data key generated under the tenant's context unwraps.
        ctx = {"tenant": "acme-corp", "purpose": "deploy-test"}
        dk = kms.generate_data_key(KeyId=outputs["KeyArn"], KeySpec="AES_256", EncryptionContext=ctx)
        back = kms.decrypt(CiphertextBlob=dk["CiphertextBlob"], EncryptionContext=ctx)
        result["round_trip"] = back["Plaintext"] == dk["Plaintext"]
    if "RoleArn" in outputs:
        iam = boto3.client("iam", region_name=region)
        name = outputs["RoleArn"].rsplit("/", 1)[-1]
        role = iam.get_role(RoleName=name)["Role"]
        result["trust_policy"] = role["AssumeRolePolicyDocument"]
    print(json.dumps(result, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
